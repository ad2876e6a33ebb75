"""Pseudo-terminals for one-off commands attached to a user's terminal.

A one-off started with a terminal gets the slave side as stdin, stdout and stderr, and
``controlling`` makes it its controlling terminal inside the sandbox, so that Ctrl-C typed
by the user (a 0x03 byte written to the master) becomes SIGINT for the command, as in a
local shell. This module is a security boundary.

Why a controlling terminal is safe despite bwrap's ``--new-session`` (which stays on):
that option exists because a sandboxed process sharing its launcher's terminal can push
characters into the terminal's input with the TIOCSTI ioctl, and the launcher's shell,
outside the sandbox, would run them (CVE-2017-5226). Here bwrap still starts the command
in a new session, away from any terminal of the server; only then does ``setsid --ctty``,
inside the sandbox, make the fresh pseudo-terminal made for this one-off its controlling
terminal. Nothing outside the sandbox reads that terminal's input: the server holds the
master side only to copy bytes to and from the user's socket, and never interprets them.
So TIOCSTI can inject only into the one-off's own input, which its user types into
anyway. The master never enters the sandbox (it is not inheritable, and the sandbox is
started with ``close_fds``), the sandbox has its own ``/dev`` (bwrap's ``--dev``), so it
cannot open another session's terminal, and it has no capabilities with which to steal
one.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from collections.abc import Sequence
from dataclasses import dataclass

# util-linux's setsid: a new session whose controlling terminal is stdin (--ctty), and
# waits for the command so that its exit status is the sandbox's (--wait).
SETSID = "/usr/bin/setsid"
DEFAULT_WIDTH, DEFAULT_HEIGHT = 80, 24
MAX_SIDE = 10_000


@dataclass(frozen=True)
class Terminal:
    master: int
    slave: int


def open_terminal(width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Terminal:
    """A fresh pseudo-terminal pair (neither side inheritable), sized ``width`` by ``height``."""
    master, slave = os.openpty()
    resize(master, width=width, height=height)
    return Terminal(master, slave)


def resize(master: int, *, width: int, height: int) -> None:
    """Set the terminal's size; the command gets SIGWINCH, as under a local terminal."""
    width, height = max(1, min(width, MAX_SIDE)), max(1, min(height, MAX_SIDE))
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def controlling(argv: Sequence[str]) -> list[str]:
    """``argv`` in a session of its own whose controlling terminal is its stdin."""
    return [SETSID, "--ctty", "--wait", *argv]
