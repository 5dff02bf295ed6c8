"""The Moodle accounts of many users (suspended, auth), by id, whatever their profiles hold.

`core_user_get_users_by_field` answers with whole profiles, and Moodle checks its own
answer against the function's return description: one user whose country is "U.K.", whose
city holds HTML or whose address ends in a space turns the whole request into
`invalidresponse`. Such a request is split in halves until the users Moodle cannot answer
for are isolated (about 2·log2(500) more requests per bad user); every other user's
account is read, and the isolated ones are reported with Moodle's error.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from moodle_ws import functions
from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.errors import InvalidResponse
from moodle_ws.types import User


@dataclass(frozen=True)
class Accounts:
    users: Mapping[int, User]  # by id; a user the token's user may not see is missing
    refused: Mapping[int, str]  # id -> Moodle's error, for users whose profile it cannot return


def accounts_by_id(
    client: MoodleClient, userids: Iterable[int], *, tally: RequestTally | None = None
) -> Accounts:
    """The accounts of `userids`, `functions.users_chunk` ids a request.

    Only `invalidresponse` is absorbed (per user, by splitting the request); any other
    MoodleError raises as it comes.
    """
    ids = sorted({int(u) for u in userids})
    chunk = functions.users_chunk(client)
    pending = [ids[i : i + chunk] for i in range(0, len(ids), chunk)][::-1]
    users: dict[int, User] = {}
    refused: dict[int, str] = {}
    while pending:
        part = pending.pop()
        try:
            found = functions.users_by_field(client, "id", part, chunk=len(part), tally=tally)
        except InvalidResponse as exc:
            if len(part) == 1:
                refused[part[0]] = str(exc)
            else:
                half = len(part) // 2
                pending += [part[half:], part[:half]]  # the first half is asked first
            continue
        users.update((u.id, u) for u in found)
    return Accounts(users, dict(sorted(refused.items())))
