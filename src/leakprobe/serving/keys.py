"""Clients of ``leakprobe serve``: API keys, per-key budgets and usage that survive restarts.

``--api-keys FILE`` (:func:`read_api_keys`) holds one key per line, in one of three forms::

    KEY                  # named key-LINE, no budget of its own
    NAME:KEY             # named NAME
    NAME:KEY:BUDGET      # at most BUDGET images answered, ever (0: may only read usage)

Blank lines and lines starting with ``#`` are skipped. A key is 16 to 512 characters of
``A-Z a-z 0-9 - . _ ~ + / =`` (RFC 6750's bearer token; ``python -c "import secrets;
print(secrets.token_urlsafe(24))"`` makes one); a name is 1 to 64 characters of
``A-Z a-z 0-9 - . _``, starting with a letter or digit. Names and keys are unique. Errors
name the file and line, never the key.

Every ``/v1/*`` request then carries ``Authorization: Bearer KEY``; :meth:`Clients.authenticate`
compares the SHA-256 of the token with that of every key in constant time
(:func:`hmac.compare_digest`, all keys, no early exit), so neither timing nor length tells
which key came close. ``--admin-key FILE`` (a file holding one key, never the command line)
names a key that reads every client's usage at ``/v1/usage`` and queries nothing.

Usage (queries, first and last seen, B4B coverage) lives in ``--state FILE`` (default:
``KEYS_FILE.state.json``), rewritten atomically after every answered request, and read at
start, so a restart resets no budget. The state never holds a key: each record is the key's
name and ``sha256(salt + key)`` with a random salt stored in the file; a key is matched to
its record by that hash, so renaming a key keeps its usage, and records of keys no longer in
the file are kept (a key put back finds its usage again).

Without ``--api-keys`` the service has one anonymous client (every caller), whose usage is
kept in memory only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from leakprobe.defences.b4b import B4B, B4BClient
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json

__all__ = ["ANONYMOUS", "APIKey", "Client", "ClientRefused", "Clients", "MIN_KEY_LENGTH",
           "read_admin_key", "read_api_keys"]

#: The shortest key accepted (characters).
MIN_KEY_LENGTH = 16
_MAX_KEY_LENGTH = 512
_KEY = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The name of the one client of a service without keys.
ANONYMOUS = "anonymous"
_STATE_FORMAT = "leakprobe-serve-state"
_FORMS = "KEY, NAME:KEY or NAME:KEY:BUDGET"


@dataclass(frozen=True)
class APIKey:
    """One line of the keys file (the key itself is never shown by ``repr``)."""

    name: str
    key: str = field(repr=False)
    budget: int | None
    line: int


def _check_key(key: str, where: str) -> None:
    if len(key) < MIN_KEY_LENGTH:
        raise LeakprobeError(f"{where}: the key is too short ({len(key)} characters, at least "
                             f"{MIN_KEY_LENGTH}); make one with python -c \"import secrets; "
                             "print(secrets.token_urlsafe(24))\"")
    if len(key) > _MAX_KEY_LENGTH:
        raise LeakprobeError(f"{where}: the key is longer than {_MAX_KEY_LENGTH} characters")
    if not _KEY.match(key):
        raise LeakprobeError(f"{where}: the key has a character outside A-Z a-z 0-9 - . _ ~ "
                             "+ / = (or '=' before its end)")


def _lines(path: str | Path, option: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank, non-comment lines of ``path``."""
    p = Path(path)
    if not p.is_file():
        raise LeakprobeError(f"{option} {p}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LeakprobeError(f"{option} {p}: cannot read it ({type(e).__name__})") from e
    return [(n, s.strip()) for n, s in enumerate(text.splitlines(), start=1)
            if s.strip() and not s.strip().startswith("#")]


def read_api_keys(path: str | Path) -> list[APIKey]:
    """The keys of ``--api-keys FILE`` (forms in the module docstring), in file order.

    Raises:
        LeakprobeError: one line, ``FILE:LINE: what is wrong`` (never the key): a missing
            or unreadable file, no keys, a line of another form, a bad name, key or budget,
            a name or key given twice.
    """
    keys: list[APIKey] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, text in _lines(path, "--api-keys"):
        where = f"{path}:{number}"
        parts = text.split(":")
        if len(parts) > 3:
            raise LeakprobeError(f"{where}: expected {_FORMS} (a key holds no ':')")
        name = parts[0].strip() if len(parts) > 1 else f"key-{number}"
        key = (parts[1] if len(parts) > 1 else parts[0]).strip()
        budget: int | None = None
        if len(parts) == 3:
            raw = parts[2].strip()
            if not raw.isdigit():
                raise LeakprobeError(f"{where}: the budget must be an integer >= 0 (images), "
                                     f"got {raw!r}")
            budget = int(raw)
        if not _NAME.match(name):
            raise LeakprobeError(f"{where}: the name {name[:64]!r} must be 1 to 64 characters "
                                 "of A-Z a-z 0-9 - . _ starting with a letter or digit")
        _check_key(key, where)
        if name in names:
            raise LeakprobeError(f"{where}: the name {name!r} is already used on line "
                                 f"{names[name]}")
        digest = hashlib.sha256(key.encode()).digest()
        if digest in digests:
            raise LeakprobeError(f"{where}: the same key as line {digests[digest]}")
        names[name], digests[digest] = number, number
        keys.append(APIKey(name=name, key=key, budget=budget, line=number))
    if not keys:
        raise LeakprobeError(f"--api-keys {path}: no API keys (one a line: {_FORMS})")
    return keys


def read_admin_key(path: str | Path) -> str:
    """The one key of ``--admin-key FILE`` (blank lines and ``#`` comments skipped).

    Raises:
        LeakprobeError: a missing or unreadable file, no key or more than one, a bad key.
    """
    lines = _lines(path, "--admin-key")
    if len(lines) != 1:
        raise LeakprobeError(f"--admin-key {path}: expected one key, found {len(lines)} lines")
    number, key = lines[0]
    _check_key(key, f"{path}:{number}")
    return key


class ClientRefused(LeakprobeError):
    """A request refused for its client: HTTP ``status``, extra JSON ``fields``, ``headers``."""

    def __init__(self, status: int, message: str, *, fields: dict | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or {}
        self.headers = headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(eq=False)
class Client:
    """One client of a service: its name, budget, usage and B4B state.

    Attributes:
        name: the key's name (``anonymous`` without keys, ``admin`` for the admin key).
        budget: images it may have answered, ever (None: no budget of its own).
        queries: images answered so far (across restarts).
        first_seen, last_seen: UTC times (ISO 8601) of its first and last answered request.
        admin: the admin key (reads usage, queries nothing).
    """

    name: str
    budget: int | None = None
    queries: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    admin: bool = False
    key_hash: str | None = field(default=None, repr=False)
    digest: bytes = field(default=b"", repr=False)
    b4b: B4BClient | None = field(default=None, repr=False)
    b4b_state: dict | None = field(default=None, repr=False)

    @property
    def remaining(self) -> int | None:
        """Images it may still have answered (None: no budget of its own)."""
        return None if self.budget is None else max(self.budget - self.queries, 0)

    def record(self) -> dict:
        """Its record in the state file (no key: the name and the salted hash)."""
        b4b = self.b4b.to_state() if self.b4b is not None else self.b4b_state
        return {"name": self.name, "key_sha256": self.key_hash, "queries": self.queries,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "b4b": b4b}


class Clients:
    """The clients of one service: who a request is from, what it may still ask, its usage.

    Args:
        keys: the API keys (None or empty: no keys, one anonymous client).
        state: the usage file (None: usage in memory only). Read at once when it exists.
        admin_key: the admin key (reads every client's usage).

    Raises:
        LeakprobeError: an unreadable or foreign state file, a state folder that does not
            exist, an admin key that is also a client key, or ``state``/``admin_key``
            without keys.
    """

    def __init__(self, keys: list[APIKey] | None = None, *, state: str | Path | None = None,
                 admin_key: str | None = None) -> None:
        self.keyed = bool(keys)
        if not self.keyed and (state is not None or admin_key is not None):
            raise LeakprobeError("--state and --admin-key need --api-keys")
        self.state_path = Path(state) if state is not None else None
        self.lock = threading.RLock()
        self.salt = secrets.token_hex(16)
        self.kept: list[dict] = []  # records of keys no longer in the keys file
        loaded = self._load() if self.state_path is not None else []
        self.clients: list[Client] = []
        by_hash = {r.get("key_sha256"): r for r in loaded}
        for k in keys or []:
            key_hash = self._hash(k.key)
            client = Client(name=k.name, budget=k.budget, key_hash=key_hash,
                            digest=hashlib.sha256(k.key.encode()).digest())
            old = by_hash.pop(key_hash, None)
            if old is not None:
                client.queries = int(old.get("queries") or 0)
                client.first_seen, client.last_seen = old.get("first_seen"), old.get("last_seen")
                client.b4b_state = old.get("b4b")
            self.clients.append(client)
        self.kept = list(by_hash.values())
        self.anonymous = Client(name=ANONYMOUS)
        self.admin: Client | None = None
        if admin_key is not None:
            digest = hashlib.sha256(admin_key.encode()).digest()
            if any(hmac.compare_digest(digest, c.digest) for c in self.clients):
                raise LeakprobeError("--admin-key: the admin key is also a client key in "
                                     "--api-keys; use a key of its own")
            self.admin = Client(name="admin", admin=True, digest=digest)

    @classmethod
    def from_files(cls, *, api_keys: str | Path | None = None, state: str | Path | None = None,
                   admin_key: str | Path | None = None) -> Clients:
        """The clients of ``--api-keys``, ``--state`` (default ``API_KEYS.state.json``) and
        ``--admin-key`` (files as in the module docstring)."""
        if api_keys is None:
            if state is not None or admin_key is not None:
                raise LeakprobeError("--state and --admin-key need --api-keys")
            return cls()
        keys = read_api_keys(api_keys)
        admin = read_admin_key(admin_key) if admin_key is not None else None
        state = state if state is not None else Path(f"{api_keys}.state.json")
        return cls(keys, state=state, admin_key=admin)

    # -- the state file ------------------------------------------------------------------------

    def _hash(self, key: str) -> str:
        return hashlib.sha256((self.salt + key).encode()).hexdigest()

    def _load(self) -> list[dict]:
        path = self.state_path
        assert path is not None
        if not path.parent.is_dir():
            raise LeakprobeError(f"--state {path}: the folder {path.parent} does not exist")
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(data, dict) and data.get("format") == _STATE_FORMAT
            salt, records = data["salt"], data["clients"]
            assert isinstance(salt, str) and len(salt) >= 16 and isinstance(records, list)
            assert all(isinstance(r, dict) and isinstance(r.get("key_sha256"), str) and
                       isinstance(r.get("queries", 0), int) for r in records)
        except (OSError, ValueError, KeyError, AssertionError) as e:
            raise LeakprobeError(f"--state {path}: not a leakprobe serve state file "
                                 f"({type(e).__name__}); move it away to start every budget "
                                 "afresh") from e
        self.salt = salt
        return records

    def save(self) -> None:
        """Write the state file atomically (a no-op without one)."""
        if self.state_path is None:
            return
        with self.lock:
            write_json(self.state_path, {
                "format": _STATE_FORMAT, "version": 1, "salt": self.salt,
                "clients": [c.record() for c in self.clients] + self.kept})

    # -- who asks, and what it may ask ---------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Client:
        """The client of a request's ``Authorization`` header.

        Without keys, the anonymous client, whatever the header.

        Raises:
            ClientRefused: 401 (with ``WWW-Authenticate: Bearer``) for a missing header, one
                that is not ``Bearer KEY``, or an unknown key.
        """
        if not self.keyed:
            return self.anonymous
        challenge = {"WWW-Authenticate": 'Bearer realm="leakprobe"'}
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ClientRefused(401, "this server needs an API key: send Authorization: "
                                     "Bearer KEY", headers=challenge)
        digest = hashlib.sha256(token[:_MAX_KEY_LENGTH + 1].encode()).digest()
        found: Client | None = None
        for client in [*self.clients, *([self.admin] if self.admin else [])]:
            if hmac.compare_digest(digest, client.digest):  # every key compared, no break
                found = client
        if found is None:
            raise ClientRefused(401, "unknown API key", headers=challenge)
        return found

    def check(self, client: Client, images: int) -> None:
        """Refuse ``images`` more for ``client`` when its budget is spent or too small.

        ``images`` 0 refuses only a spent budget (what a request is refused for before its
        body is read).

        Raises:
            ClientRefused: 429 with ``remaining``, ``budget`` and ``used`` in the body.
        """
        with self.lock:
            budget, used = client.budget, client.queries
            if budget is None or (used < budget and used + images <= budget):
                return
            left = max(budget - used, 0)
            what = "is spent" if left == 0 else f"allows {left} more queries"  # images or texts
            raise ClientRefused(429, f"the query budget of key '{client.name}' {what} "
                                     f"({used} of {budget} used, {images} requested)",
                                fields={"remaining": left, "budget": budget, "used": used})

    def charge(self, client: Client, images: int) -> None:
        """Count ``images`` answered to ``client`` (its budget was checked)."""
        with self.lock:
            now = _now()
            client.queries += int(images)
            client.first_seen = client.first_seen or now
            client.last_seen = now

    def b4b_client(self, client: Client, settings: B4B, *, dim: int, seed: int) -> B4BClient:
        """``client``'s B4B state: restored from the state file, or a fresh one (hash
        functions seeded by the service's ``seed``; a keyed client's transformation by a
        random seed kept in the state file, the anonymous client's by ``seed``).

        Raises:
            LeakprobeError: a saved coverage of another embedding width.
        """
        with self.lock:
            if client.b4b is None:
                if client.b4b_state is not None:
                    client.b4b = B4BClient.from_state(settings, client.b4b_state)
                    if client.b4b.tracker.dim != dim:
                        client.b4b = None
                        raise LeakprobeError(f"the B4B coverage saved for '{client.name}' is "
                                             f"of {dim}-wide embeddings")
                else:
                    transform_seed = seed if client is self.anonymous else secrets.randbits(31)
                    client.b4b = settings.client(dim, seed=seed, transform_seed=transform_seed)
            return client.b4b

    def check_b4b_width(self, dim: int) -> None:
        """Refuse a state file whose B4B coverage is of another embedding width.

        Raises:
            LeakprobeError: one line naming the state file and both widths.
        """
        for c in self.clients:
            tracker = (c.b4b_state or {}).get("tracker")
            if isinstance(tracker, dict) and tracker.get("dim") not in (None, dim):
                raise LeakprobeError(f"--state {self.state_path}: the B4B coverage of "
                                     f"'{c.name}' is of {tracker.get('dim')}-wide embeddings, "
                                     f"this encoder answers {dim}; use another --state")

    # -- usage ---------------------------------------------------------------------------------

    def usage(self, client: Client) -> dict:
        """``/v1/usage`` for one client: ``name``, ``queries``, ``budget``, ``remaining``,
        ``first_seen``, ``last_seen``, ``coverage`` and ``noise_std`` (B4B's coverage in
        percent and the std its next answer gets; null without B4B or before any answer)."""
        with self.lock:
            b4b = client.b4b
            coverage: float | None = None
            if b4b is not None:
                coverage = b4b.coverage
            elif client.b4b_state is not None:
                coverage = (client.b4b_state.get("tracker") or {}).get("coverage")
            return {"name": client.name, "queries": client.queries, "budget": client.budget,
                    "remaining": client.remaining, "first_seen": client.first_seen,
                    "last_seen": client.last_seen,
                    "coverage": None if coverage is None else round(float(coverage), 4),
                    "noise_std": None if b4b is None else b4b.noise_std}

    def usage_all(self) -> dict:
        """``/v1/usage`` for the admin key: ``{"clients": [usage of every key]}``."""
        with self.lock:
            return {"clients": [self.usage(c) for c in self.clients]}
