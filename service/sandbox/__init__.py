"""A contract-faithful fake of useapi.net's TemPolor music list endpoint, with fault injection."""

from service.sandbox.app import SANDBOX_TOKEN, SandboxCall, SandboxState, create_sandbox
from service.sandbox.server import SandboxServer

__all__ = ["SANDBOX_TOKEN", "SandboxCall", "SandboxServer", "SandboxState", "create_sandbox"]
