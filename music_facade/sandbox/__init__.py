"""A contract-faithful fake of useapi.net's TemPolor music list endpoint, with fault injection."""

from music_facade.sandbox.app import SANDBOX_TOKEN, SandboxCall, SandboxState, create_sandbox
from music_facade.sandbox.server import SandboxServer

__all__ = ["SANDBOX_TOKEN", "SandboxCall", "SandboxServer", "SandboxState", "create_sandbox"]
