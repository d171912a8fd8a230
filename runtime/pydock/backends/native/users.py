"""Resolve a USER string through the container's /etc/passwd and /etc/group (Docker's rules).

Imported by the zygote factory (factory.py), which must stay small: no dataclasses here.
"""

from __future__ import annotations


class UserError(Exception):
    """The user or group named by USER does not exist in the image."""


class ExecUser:
    """The ids, supplementary groups and home a USER string resolves to."""

    __slots__ = ("uid", "gid", "groups", "home")

    def __init__(self, uid: int, gid: int, groups: tuple[int, ...], home: str) -> None:
        self.uid, self.gid, self.groups, self.home = uid, gid, tuple(groups), home

    def as_tuple(self) -> tuple[int, int, tuple[int, ...], str]:
        return self.uid, self.gid, self.groups, self.home

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecUser) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return (f"ExecUser(uid={self.uid}, gid={self.gid}, groups={self.groups}, "
                f"home={self.home!r})")


def _entries(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            rows.append(parts)
    return rows


def resolve(user: str, passwd: str, group: str) -> ExecUser:
    """``name``, ``uid``, ``name:group``, ``uid:gid`` -> ids, supplementary groups, home.

    Like runc's GetExecUser: a numeric uid missing from passwd is used as is with gid 0 and
    home ``/``; a name missing from passwd is an error.
    """
    user_part, _, group_part = (user or "0").partition(":")
    users = _entries(passwd, 7)
    entry = None
    for row in users:
        if row[0] == user_part or (user_part.isdigit() and row[2] == user_part):
            entry = row
            break
    if entry is None:
        if not user_part.isdigit():
            raise UserError(f"unable to find user {user_part}: no matching entries in "
                            "passwd file")
        uid, gid, home, name = int(user_part), 0, "/", ""
    else:
        uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    groups_rows = _entries(group, 4)
    if group_part:
        for row in groups_rows:
            if row[0] == group_part or (group_part.isdigit() and row[2] == group_part):
                gid = int(row[2])
                break
        else:
            if not group_part.isdigit():
                raise UserError(f"unable to find group {group_part}: no matching entries in "
                                "group file")
            gid = int(group_part)
        supplementary: list[int] = []
    else:
        supplementary = [int(row[2]) for row in groups_rows
                         if name and name in row[3].split(",") and row[2].isdigit()]
    groups = tuple(dict.fromkeys([gid, *supplementary]))
    return ExecUser(uid=uid, gid=gid, groups=groups, home=home)


def resolve_in_root(user: str, root: str = "/") -> ExecUser:
    """Resolve ``user`` reading passwd and group below ``root`` (missing files are empty)."""
    texts = []
    for name in ("etc/passwd", "etc/group"):
        try:
            with open(f"{root.rstrip('/')}/{name}", encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        except OSError:
            texts.append("")
    return resolve(user, texts[0], texts[1])
