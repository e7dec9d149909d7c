"""The message broker: an XSUB/XPUB forwarder run by libzmq's own proxy. Imports nothing of ours."""

from broker.proxy import Broker, BrokerError

__all__ = ["Broker", "BrokerError"]
