"""modelyard: from a trained model to a monitored, governed production endpoint."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.client import Client

    __version__: str


def __getattr__(name: str) -> object:
    # Imported lazily so `import modelyard` stays cheap for the CLI and the formats
    # (importlib.metadata alone takes ~40 ms, and `modelyard --help` never needs the version).
    if name == "Client":
        from modelyard.client import Client

        return Client
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("modelyard")
        except PackageNotFoundError:  # running from a source tree that was not installed
            found = "0.0.0+dev"
        globals()["__version__"] = found
        return found
    raise AttributeError(name)


__all__ = ["Client", "__version__"]
