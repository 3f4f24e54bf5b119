"""AION Explorer's Panel app: `panel serve app` serves app/main.py."""
