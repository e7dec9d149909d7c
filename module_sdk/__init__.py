"""The SDK a module imports: the event-bus interface and the `Event` its callbacks receive.

A module is a `.py` file or a package with:

    def initialize(event_bus: EventBus, config: dict[str, Any]) -> None: ...
    def shutdown() -> None: ...
    def get_tests() -> list[str]: ...   # optional

It never imports the supervisor; the supervisor runs it through `python -m module_sdk`.
"""

from module_sdk.api import EventBus
from module_sdk.event import Event, EventCallback, Pattern, validate_event_type

__all__ = ["Event", "EventBus", "EventCallback", "Pattern", "validate_event_type"]
__version__ = "0.1.0"
