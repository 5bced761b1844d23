"""The AWS SDKs' shared conventions for where requests go: endpoint and region from the arguments, the
environment and the shared config file (``~/.aws/config``), resolved the same way for every client
s3torch builds (S3Client, readers, DCP, datasets, checkpoints).

Endpoint: the ``endpoint`` argument, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else the
profile's ``services`` section ``s3 = endpoint_url = ...``, else the profile's ``endpoint_url``, else
AWS's own. ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` (or the profile's
``ignore_configured_endpoint_urls = true``) turns off all but the argument.

Region: the ``region`` argument, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else the profile's
``region``. Profile: the ``S3ClientConfig.profile``, else ``AWS_PROFILE``, else ``default``.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Mapping, Optional

_TRUE = ("1", "true", "yes", "on")


def _config_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()


def profile_name(profile: Optional[str], environ: Mapping[str, str]) -> str:
    return profile or environ.get("AWS_PROFILE") or "default"


def _read_config(environ: Mapping[str, str]) -> Optional[configparser.RawConfigParser]:
    path = _config_file(environ)
    parser = configparser.RawConfigParser(default_section="\0none")
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None  # an unreadable file is as if absent, as in the SDKs' endpoint and region lookup
    return parser


def _profile_section(parser: configparser.RawConfigParser, name: str) -> Optional[Mapping[str, str]]:
    for section in ((name, f"profile {name}") if name == "default" else (f"profile {name}",)):
        if parser.has_section(section):
            return parser[section]
    return None


def _services_endpoint(parser: configparser.RawConfigParser, profile: Mapping[str, str]) -> Optional[str]:
    """``services = NAME`` in the profile, and in ``[services NAME]`` a nested ``s3 = endpoint_url = ...``."""
    services = (profile.get("services") or "").strip()
    if not services or not parser.has_section(f"services {services}"):
        return None
    nested = parser[f"services {services}"].get("s3") or ""
    for line in nested.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "endpoint_url" and value.strip():
            return value.strip()
    return None


def resolve_endpoint(
    endpoint: Optional[str], profile: Optional[str] = None, environ: Optional[Mapping[str, str]] = None
) -> Optional[str]:
    """The endpoint a client talks to; None means AWS's own for the region."""
    if endpoint:
        return endpoint
    env = os.environ if environ is None else environ
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() in _TRUE:
        return None
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(var, "").strip():
            return env[var].strip()
    parser = _read_config(env)
    section = _profile_section(parser, profile_name(profile, env)) if parser else None
    if parser is None or section is None:
        return None
    if (section.get("ignore_configured_endpoint_urls") or "").strip().lower() in _TRUE:
        return None
    return _services_endpoint(parser, section) or (section.get("endpoint_url") or "").strip() or None


def resolve_region(
    region: Optional[str], profile: Optional[str] = None, environ: Optional[Mapping[str, str]] = None
) -> str:
    """The region requests are signed for; a ValueError that says how to set one when none is known."""
    if region:
        return region
    env = os.environ if environ is None else environ
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(var, "").strip():
            return env[var].strip()
    name = profile_name(profile, env)
    parser = _read_config(env)
    section = _profile_section(parser, name) if parser else None
    if section is not None and (section.get("region") or "").strip():
        return section["region"].strip()
    raise ValueError(
        "no region: pass region='us-east-1' (for example), or set AWS_REGION (or AWS_DEFAULT_REGION), or "
        f"a region in profile '{name}' of {_config_file(env)}"
    )
