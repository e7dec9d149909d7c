"""Configuration: `load_config(config_dir)` reads and validates `main.yaml` and `modules.yaml` into
frozen dataclasses; `Redactor` and `RedactingFilter` keep the secrets they hold out of logs."""

from orchestrator.config.errors import ConfigError
from orchestrator.config.loader import load_config
from orchestrator.config.model import (
    AppConfig,
    AppSection,
    BusSection,
    ErrorHandlingSection,
    LoggingSection,
    MetricsSection,
    ModuleSpec,
    NotificationsSection,
    ResourcesSection,
    SupervisionSettings,
    Webhook,
)
from orchestrator.config.redact import RedactingFilter, Redactor

__all__ = [
    "AppConfig",
    "AppSection",
    "BusSection",
    "ConfigError",
    "ErrorHandlingSection",
    "LoggingSection",
    "MetricsSection",
    "ModuleSpec",
    "NotificationsSection",
    "RedactingFilter",
    "Redactor",
    "ResourcesSection",
    "SupervisionSettings",
    "Webhook",
    "load_config",
]
