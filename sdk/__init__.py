"""runtel: OpenTelemetry-native experiment tracking for machine learning."""

__version__ = "0.1.0"
