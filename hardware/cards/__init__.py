"""Virtual cards (vsmartcard-style ``execute(apdu) -> response``) and their TOML profiles."""

from hardware.cards.profiles import CardProfile, list_profiles, load_profile

__all__ = ["CardProfile", "list_profiles", "load_profile"]
