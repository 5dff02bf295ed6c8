"""core_user_update_users (per-user warnings, 4.0+) and core_user_create_users (all or nothing)."""

from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import InvalidParameter, MoodleException
from moodle_ws.sandbox.model import User
from moodle_ws.sandbox.phpvalue import AUTH_PLUGINS, LANGS, THEMES, validate_email

# Preferences core_user defines, with their allowed choices (None: any value).
PREFERENCES: dict[str, tuple[Any, tuple | None]] = {
    "auth_forcepasswordchange": ("0", ("0", "1")),
    "htmleditor": ("", None),
    "badgeprivacysetting": ("1", ("0", "1")),
    "blogpagesize": ("10", None),
    "forum_markasreadonnotification": ("1", ("0", "1")),
    "user_home_page_preference": ("1", ("0", "1", "3")),
    "email_bounce_count": ("0", None),
    "email_send_count": ("0", None),
}
PROFILE_ATTRS = (
    "username",
    "auth",
    "firstname",
    "lastname",
    "email",
    "maildisplay",
    "city",
    "country",
    "timezone",
    "description",
    "firstnamephonetic",
    "lastnamephonetic",
    "middlename",
    "alternatename",
    "interests",
    "idnumber",
    "institution",
    "department",
    "phone1",
    "phone2",
    "address",
    "lang",
    "calendartype",
    "theme",
    "mailformat",
)


def password_policy_errors(password: str) -> str:
    """check_password_policy() with Moodle's default policy; '' when it passes."""
    errors = []
    if len(password) < 8:
        errors.append("Passwords must be at least 8 characters long.")
    if sum(c.isdigit() for c in password) < 1:
        errors.append("Passwords must have at least 1 digit(s).")
    if sum(c.islower() for c in password) < 1:
        errors.append("Passwords must have at least 1 lower case letter(s).")
    if sum(c.isupper() for c in password) < 1:
        errors.append("Passwords must have at least 1 upper case letter(s).")
    if sum(not c.isalnum() for c in password) < 1:
        errors.append("The password must have at least 1 special character(s) such as *, -, or #.")
    return "".join(f"<div>{e}</div>" for e in errors)


def _policy(call: Call, password: str) -> None:
    if call.site.password_policy:
        errmsg = password_policy_errors(password)
        if errmsg:
            # moodle_exception($errmsg): the errorcode *is* the policy HTML.
            raise MoodleException(errmsg, f"error/{errmsg}")


def _store_preferences(call: Call, target: User, preferences: list[dict]) -> None:
    for pref in preferences:
        name, value = str(pref["type"]), str(pref["value"])
        known = PREFERENCES.get(name)
        if known is None and not name.startswith(("filepicker_", "userselector_")):
            continue  # not defined by core or a plugin: ignored without a warning
        if name == "auth_forcepasswordchange" and (
            target.id == call.user.id or not call.has_capability("moodle/user:update")
        ):
            continue
        if known and known[1] is not None and value not in known[1]:
            value = known[0]
        target.preferences[name] = value


def _update_one(call: Call, data: dict) -> None:
    site = call.site
    user = site.users.get(data["id"])
    if user is None:
        raise MoodleException("invaliduserid", "Invalid user ID")
    if (
        user.id != call.user.id
        and user.id in site.siteadmins
        and call.user.id not in site.siteadmins
    ):
        raise MoodleException("usernotupdatedadmin", "Cannot update admin accounts")
    if user.deleted:
        raise MoodleException("usernotupdateddeleted", "error/usernotupdateddeleted")
    if user.id == site.guest_id:
        raise MoodleException("usernotupdatedguest", "error/usernotupdatedguest")
    email = data.get("email")
    if email is not None and email != user.email:
        if not validate_email(email):
            raise MoodleException("useremailinvalid", "error/useremailinvalid")
        if not site.allow_accounts_same_email and site.user_by_email(email, exclude=user.id):
            raise MoodleException("useremailduplicate", "Duplicate address")
    username = data.get("username")
    if username is not None and username != username.lower():
        raise MoodleException("usernamelowercase", "The username must be in lower case")
    if "password" in data:
        _policy(call, data["password"])
    # Everything checked: apply (a failure above leaves the user untouched, as the rollback).
    for name in PROFILE_ATTRS:
        if name in data and data[name] is not None:
            setattr(user, name, data[name])
    if username is not None and username != user.username:
        site.usernames.pop(user.username, None)
    if username is not None:
        site.usernames[username] = user.id
    if "suspended" in data and data["suspended"] is not None:
        user.suspended = int(data["suspended"])
    if "password" in data and user.auth in ("manual", "email"):  # internal passwords
        user.password = data["password"]
    for field in data.get("customfields") or ():
        if any(f.shortname == field["type"] for f in site.profile_fields):
            user.customfields[field["type"]] = field["value"]
    _store_preferences(call, user, data.get("preferences") or ())
    user.timemodified = call.now
    site.version += 1


def update_users(call: Call, users: list[dict]) -> dict | None:
    """core_user_update_users: {warnings} per failed user (4.0+), or null and abort (< 4.0)."""
    call.require_capability("moodle/user:update")
    warnings = []
    for data in users:
        try:
            _update_one(call, data)
        except MoodleException as exc:
            if not call.site.update_users_warnings:
                raise  # Moodle < 4.0: the first failure aborts the batch
            warnings.append(
                {
                    "item": "user",
                    "itemid": data["id"],
                    "warningcode": exc.errorcode,
                    "message": exc.message,
                }
            )
    return {"warnings": warnings} if call.site.update_users_warnings else None


def create_users(call: Call, users: list[dict]) -> list[dict]:
    """core_user_create_users: all users or none; invalidparameter names the first problem."""
    call.require_capability("moodle/user:create")
    site = call.site
    auths = AUTH_PLUGINS - {"mnet", "webservice"}
    staged: list[User] = []
    taken = set(site.usernames)
    for data in users:
        for name in ("username", "firstname", "lastname"):
            if data[name].strip() == "":
                raise InvalidParameter(f"The field {name} cannot be blank")
        if data["username"] in taken:
            raise InvalidParameter(f"Username already exists: {data['username']}")
        if data["auth"] not in auths:
            raise InvalidParameter(f"Invalid authentication type: {data['auth']}")
        if data["lang"] not in LANGS:
            raise InvalidParameter(f"Invalid language code: {data['lang']}")
        if data.get("theme") and data["theme"] not in THEMES:
            raise InvalidParameter(f"Invalid theme: {data['theme']}")
        createpassword = bool(data.get("createpassword"))
        if not createpassword and not data.get("password") and data["auth"] == "manual":
            raise InvalidParameter(
                "Invalid password: you must provide a password, or set createpassword."
            )
        if not validate_email(data["email"]):
            raise InvalidParameter(f"Email address is invalid: {data['email']}")
        if not site.allow_accounts_same_email and (
            site.user_by_email(data["email"])
            or any(u.email.lower() == data["email"].lower() for u in staged)
        ):
            raise InvalidParameter(f"Email address already exists: {data['email']}")
        password = data.get("password") or ""
        if createpassword:
            password = f"Gen-{site.new_id('generated_password'):06d}!a"
        elif password:
            _policy(call, password)
        user = User(
            id=0,
            username=data["username"],
            password=password,
            firstname=data["firstname"],
            lastname=data["lastname"],
            email=data["email"],
            timecreated=call.now,
            timemodified=call.now,
        )
        for name in PROFILE_ATTRS:
            if name in data and data[name] is not None and name not in ("username", "email"):
                setattr(user, name, data[name])
        for field in data.get("customfields") or ():
            user.customfields[field["type"]] = field["value"]
        if createpassword:
            user.preferences["auth_forcepasswordchange"] = "1"
        staged.append(user)
        taken.add(user.username)
        _store_preferences(call, user, data.get("preferences") or ())
    # One transaction: nothing is stored unless every user passed.
    out = []
    for user in staged:
        user.id = site.new_id("user")
        site.add_user(user)
        if user.preferences.get("auth_forcepasswordchange") == "1" and user.password.startswith(
            "Gen-"
        ):
            site.emails.append({"to": user.email, "subject": "New user account", "userid": user.id})
        out.append({"id": user.id, "username": user.username})
    return out
