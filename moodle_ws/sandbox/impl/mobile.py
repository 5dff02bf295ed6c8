"""tool_mobile_call_external_functions: several calls in one request, JSON inside JSON.

Each inner call goes through external_api::call_external_function (validation, the
function's own checks, return cleaning) but not through the REST server: no token
re-check beyond "is the function in the token's service". The first failure stops the
batch; earlier calls stay done.
"""

import json
from typing import Any

from moodle_ws.sandbox.context import Call, Settings
from moodle_ws.sandbox.exceptions import PHPError, SandboxThrowable, missing_record
from moodle_ws.sandbox.render import json_encode
from moodle_ws.sandbox.validate import clean_returnvalue, validate_parameters

DOCS_BRANCH = "405"


def _decode_arguments(text: Any) -> Any:
    def refuse(constant: str) -> None:
        """json.loads accepts NaN/Infinity; PHP's json_decode does not."""
        raise ValueError(constant)

    try:
        args = json.loads(text, parse_constant=refuse) if isinstance(text, str) else None
    except ValueError:
        args = None
    return args if isinstance(args, (dict, list)) else {}


def exception_info(call: Call, exc: SandboxThrowable, lang: str) -> dict[str, Any]:
    """get_exception_info() as call_external_function returns it (no class name)."""
    if isinstance(exc, PHPError):
        errorcode, module, message, debuginfo = (
            "generalexceptionmessage",
            "error",
            (f"Exception - {exc.message}"),
            "",
        )
    else:
        errorcode, module, message, debuginfo = (
            exc.errorcode,
            exc.module,
            exc.message,
            exc.debuginfo,
        )
    modulelink = "moodle" if module in ("error", "", "moodle") else module
    developer = call.site.debug == "developer"
    info: dict[str, Any] = {"message": message, "errorcode": errorcode}
    if developer:
        info["backtrace"] = (
            "* line 1 of /webservice/rest/server.php: call to webservice_rest_server->run()"
        )
    info["link"] = f"{call.wwwroot}/"
    info["moreinfourl"] = (
        f"https://docs.moodle.org/{DOCS_BRANCH}/{lang}/error/{modulelink}/{errorcode}"
    )
    if developer:
        info["debuginfo"] = debuginfo
    return info


def _inner(call: Call, name: str, args: Any, settings: Settings) -> dict[str, Any]:
    from moodle_ws.sandbox.dispatch import not_implemented, registered

    site = call.site
    inner = Call(site, call.user, call.serviceid, call.token, settings)
    try:
        reg = registered(site).get(name)
        if reg is None:
            raise missing_record("external_functions", "name = ?", [name])
        if reg.spec is None or reg.impl is None:
            raise not_implemented(name)
        params = validate_parameters(reg.spec.parameters, args)
        result = reg.impl(inner, **params)
        returns = reg.spec.returns
        return {
            "error": False,
            "data": None if returns is None else clean_returnvalue(returns, result),
        }
    except SandboxThrowable as exc:
        return {"error": True, "exception": exception_info(inner, exc, inner.lang)}


def call_external_functions(call: Call, requests: list[dict]) -> dict[str, Any]:
    """tool_mobile_call_external_functions: JSON-string results, up to the first error."""
    site = call.site
    service = site.services.get(call.serviceid)
    responses = []
    for request in requests:
        name = request["function"]
        site.count_inner(name)
        settings = Settings(
            raw=request["settingraw"],
            filter=request["settingfilter"],
            fileurl=request["settingfileurl"],
            lang=request["settinglang"],
        )
        if service is not None and name in service.functions:
            response = _inner(call, name, _decode_arguments(request["arguments"]), settings)
        else:
            response = {
                "error": True,
                "exception": {"errorcode": "accessexception", "module": "webservice"},
            }
        out: dict[str, Any] = {"error": response["error"]}
        if response.get("data") is not None:
            out["data"] = json_encode(response["data"])
        if response.get("exception") is not None:
            out["exception"] = json_encode(response["exception"])
        responses.append(out)
        if response["error"]:
            break  # Moodle stops at the first failing request
    return {"responses": responses}
