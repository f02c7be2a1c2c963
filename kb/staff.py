"""The staff password: where it comes from, checking it, and limiting failed attempts.

* There is no default password.  Without one configured (``KB_STAFF_PASSWORD`` or the
  app's secret ``staff_password``), staff actions are off.
* Passwords are compared in constant time (``hmac.compare_digest`` on digests, so the
  length does not leak either).
* Failed attempts are counted here, in this process, per client address and for all
  clients together (never in anything a browser can change): after ``max_attempts``
  failures within ``lockout_s`` seconds (``GLOBAL_FACTOR`` times as many for all clients
  together), further attempts are refused, unchecked, until the window has passed.
* A successful login gives a *token*: an HMAC, under a key made fresh for each process,
  of the password's digest and the server-side session id.  The app keeps the token in
  the session and calls :meth:`StaffGate.verify` before every staff action, so a flag set
  in the session, a query parameter or a token taken to another session unlocks nothing,
  and changing the password (or restarting) signs every session out.
* The password is never logged, shown or put in a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Secret key of this process for session tokens (tokens do not survive a restart).
_PROCESS_KEY = secrets.token_bytes(32)

#: Failed attempts per client key: monotonic times of recent failures.
_FAILURES: dict[str, list[float]] = {}
_FAILURES_LOCK = threading.Lock()

#: Key for attempts whose client cannot be told apart (and for all clients together).
ANY_CLIENT = "*"
#: All clients together may fail this many times more than one client.
GLOBAL_FACTOR = 4


def configured_password(settings, secrets_source: Mapping | None = None) -> str:
    """The staff password: ``settings.staff_password`` (``KB_STAFF_PASSWORD``) first, then
    ``staff_password`` from the app's secrets; ``""`` (staff actions off) when neither is set."""
    password = getattr(settings, "staff_password", "") or ""
    if password:
        return password
    if secrets_source is None:
        return ""
    try:
        value = secrets_source.get("staff_password", "")
    except Exception:  # a missing or unreadable secrets file means "not configured"
        return ""
    return value if isinstance(value, str) else ""


def reset_attempts() -> None:
    """Forget every failed attempt (for tests and for an administrator's console)."""
    with _FAILURES_LOCK:
        _FAILURES.clear()


@dataclass
class LoginResult:
    """The outcome of one login attempt; ``message`` is safe to show."""

    ok: bool
    token: str = ""
    message: str = ""
    wait_s: int = 0


@dataclass
class StaffGate:
    """Checks the staff password and the tokens of signed-in sessions."""

    password: str = field(default="", repr=False)
    max_attempts: int = 5
    lockout_s: int = 60
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @classmethod
    def from_settings(cls, settings, secrets_source: Mapping | None = None) -> "StaffGate":
        return cls(
            password=configured_password(settings, secrets_source),
            max_attempts=max(1, int(settings.staff_max_attempts)),
            lockout_s=max(1, int(settings.staff_lockout_s)),
        )

    @property
    def enabled(self) -> bool:
        """Staff actions are possible only with a password configured."""
        return bool(self.password)

    # --- logging in ---------------------------------------------------------------------
    def login(self, attempt: str, session_id: str, client: str = ANY_CLIENT) -> LoginResult:
        """Check ``attempt``; on success return a token bound to ``session_id``."""
        if not self.enabled:
            return LoginResult(False, message="Staff actions are off: no staff password is configured.")
        if not session_id:
            return LoginResult(False, message="No session: reload the page and try again.")
        key = client or ANY_CLIENT
        wait = self.wait_s(key)
        if wait:
            return LoginResult(False, message=f"Too many failed attempts. Try again in {wait} s.", wait_s=wait)
        if not _same_secret(str(attempt or ""), self.password):
            self._record_failure(key)
            wait = self.wait_s(key)
            if wait:
                return LoginResult(False, message=f"Wrong password. Too many failed attempts: try again in {wait} s.", wait_s=wait)
            return LoginResult(False, message="Wrong password.")
        self._forget_failures(key)
        return LoginResult(True, token=self.token_for(session_id), message="Signed in as staff.")

    def token_for(self, session_id: str) -> str:
        """The token of a signed-in ``session_id`` (depends on the password and this process)."""
        digest = hashlib.sha256(self.password.encode("utf-8")).digest()
        message = b"kb-staff-v1|" + digest + b"|" + str(session_id).encode("utf-8")
        return hmac.new(_PROCESS_KEY, message, hashlib.sha256).hexdigest()

    def verify(self, token: object, session_id: str) -> bool:
        """Whether ``token`` is this session's valid staff token (checked in constant time)."""
        if not self.enabled or not session_id or not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.token_for(session_id).encode("utf-8"))

    # --- rate limit -----------------------------------------------------------------------
    def wait_s(self, client: str = ANY_CLIENT) -> int:
        """Seconds until ``client`` may try again (0: now).

        A client is held back after ``max_attempts`` failures within ``lockout_s``; all
        clients together after ``GLOBAL_FACTOR`` times as many (so changing address does
        not buy unlimited guesses).  Unknown clients share the strict per-client limit.
        """
        now = self.clock()
        with _FAILURES_LOCK:
            waits = [self._wait(client, self.max_attempts, now)]
            if client != ANY_CLIENT:
                waits.append(self._wait(ANY_CLIENT, self.max_attempts * GLOBAL_FACTOR, now))
        return max(waits)

    def _wait(self, key: str, limit: int, now: float) -> int:
        """Seconds until ``key`` is below ``limit`` failures in the window; lock held."""
        recent = [t for t in _FAILURES.get(key, []) if now - t < self.lockout_s]
        if recent:
            _FAILURES[key] = recent
        else:
            _FAILURES.pop(key, None)
        if len(recent) < limit:
            return 0
        unlock = recent[-limit] + self.lockout_s
        return max(1, int(unlock - now + 0.999))

    def _record_failure(self, client: str) -> None:
        now = self.clock()
        with _FAILURES_LOCK:
            for key in {client, ANY_CLIENT}:
                _FAILURES.setdefault(key, []).append(now)

    def _forget_failures(self, client: str) -> None:
        with _FAILURES_LOCK:
            _FAILURES.pop(client, None)


def _same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that does not leak the length either."""
    left = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    right = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(left, right)
