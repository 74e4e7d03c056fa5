"""modelyard: from a trained model to a monitored, governed production endpoint."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelyard")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+dev"


def __getattr__(name: str) -> object:
    # Imported lazily so `import modelyard` stays cheap for the CLI and the formats.
    if name == "Client":
        from modelyard.client import Client

        return Client
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
