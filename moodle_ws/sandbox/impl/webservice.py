"""core_webservice_get_site_info: who the token is, and the functions of its service."""

import hashlib
from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.site import CORE_RELEASE, CORE_VERSION


def get_site_info(call: Call, serviceshortnames: list[str]) -> dict[str, Any]:
    """core_webservice_get_site_info: the token user and the functions of the token's service."""
    from moodle_ws.sandbox.dispatch import registered

    site, user = call.site, call.user
    call.require_password_changed()  # validate_context(user context) runs require_login()
    regs = registered(site)
    service = site.services[call.serviceid]
    functions = [
        {"name": n, "version": regs[n].version} for n in sorted(service.functions) if n in regs
    ]
    features = [
        ("usecomments", 1),
        ("usetags", 1),
        ("enablenotes", 1),
        ("messaging", int(site.messaging)),
        ("enableblogs", 1),
        ("enablecompletion", int(site.completion_enabled)),
        ("enablebadges", 1),
        ("messagingallusers", 0),
        ("enablecustomreports", 1),
        ("enableglobalsearch", 0),
        ("mnet_dispatcher_mode", 0),
        ("enablecompetencies", 1),
    ]
    key = hashlib.md5(f"{site.seed}:{user.id}:core_files".encode()).hexdigest()
    return {
        "sitename": call.format_string(site.sitename),
        "username": user.username,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "fullname": user.fullname,
        "lang": call.lang,
        "userid": user.id,
        "siteurl": site.wwwroot,
        "userpictureurl": call.user_picture(user),
        "functions": functions,
        "downloadfiles": service.downloadfiles,
        "uploadfiles": service.uploadfiles,
        "release": CORE_RELEASE,
        "version": CORE_VERSION,
        "mobilecssurl": "",
        "advancedfeatures": [{"name": n, "value": v} for n, v in features],
        "usercanmanageownfiles": True,
        "userquota": 104857600,
        "usermaxuploadfilesize": 104857600,
        "userhomepage": 1,
        "userprivateaccesskey": key,
        "siteid": 1,
        "sitecalendartype": "gregorian",
        "usercalendartype": user.calendartype,
        "userissiteadmin": user.id in site.siteadmins,
        "theme": "boost",
        "limitconcurrentlogins": 0,
        "policyagreed": user.policyagreed,
    }
