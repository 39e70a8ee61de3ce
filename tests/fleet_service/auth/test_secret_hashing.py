"""Password hashing at OWASP's scrypt cost, hashes that name their cost, and rehashing."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from protocol import secrets as hashing
from protocol.secrets import (
    PASSWORD_COST,
    SECRET_COST,
    Cost,
    cost_of,
    hash_password,
    hash_secret,
    needs_rehash,
    verify_secret,
)

# OWASP Password Storage Cheat Sheet: "scrypt with a minimum CPU/memory cost parameter of (2^17), a minimum block
# size of 8 (1024 bytes), and a parallelization parameter of 1".
OWASP_MINIMUM = Cost(2**17, 8, 1)


def test_passwords_are_hashed_at_least_at_owasps_scrypt_minimum_and_verify():
    stored = hash_password("correct horse battery")
    assert cost_of(stored).at_least(OWASP_MINIMUM)
    assert stored.split("$")[:4] == ["scrypt", str(PASSWORD_COST.n), str(PASSWORD_COST.r), str(PASSWORD_COST.p)]
    assert verify_secret("correct horse battery", stored)  # hashlib's default 32 MiB maxmem refused this cost
    assert not verify_secret("correct horse batterY", stored)
    assert not needs_rehash(stored)


def test_an_older_cheaper_hash_still_verifies_and_asks_to_be_redone():
    old = hash_secret("hunter2-hunter2", Cost(2**14, 8, 1))  # what every hash was before
    assert verify_secret("hunter2-hunter2", old)
    assert needs_rehash(old)
    assert needs_rehash(None) and needs_rehash("bcrypt$whatever") and needs_rehash("scrypt$x$8$1$a$b")
    assert not needs_rehash(old, SECRET_COST)


def test_unit_secrets_keep_the_cheaper_cost():
    """256-bit random secrets cannot be guessed; a fleet reconnecting at once checks thousands of them."""
    stored = hash_secret("a-generated-256-bit-secret")
    assert cost_of(stored) == SECRET_COST
    assert verify_secret("a-generated-256-bit-secret", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # 1 TiB of memory: refused, not attempted
        "scrypt$16384$8$1$not base64$AAAA",
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$",
        "scrypt$0$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",
        "scrypt$3$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==",
        "",
    ],
)
def test_malformed_or_absurd_hashes_never_match_and_never_raise(stored):
    start = time.monotonic()
    assert not verify_secret("anything", stored)
    assert time.monotonic() - start < 1


def test_at_most_a_few_expensive_hashes_run_at_once(monkeypatch):
    """Each password hash holds 128 MiB while it runs: many logins at once must not multiply that."""
    running = peak = 0
    lock = threading.Lock()
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(hashing.hashlib, "scrypt", counting)
    stored = hash_secret("x" * 20)
    threads = [threading.Thread(target=verify_secret, args=("x" * 20, stored)) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= 8
