"""Shared by the stand-in's docservice and its start-up steps: config cascade and build facts."""
import json
import os

CONFIG_DIR = os.environ.get("NODE_CONFIG_DIR", "/etc/onlyoffice/documentserver")
# Same order as the real server's node-config cascade with NODE_ENV=production-linux:
# later files override earlier ones, key by key.
CONFIG_FILES = ("default.json", "production-linux.json", "local.json", "local-production-linux.json")
BUILD_FILE = "/var/www/onlyoffice/documentserver/server/build.json"
SCHEMA_DIR = "/var/www/onlyoffice/documentserver/server/schema/postgresql"
RELEASE_DATE_FILE = "/var/www/onlyoffice/Data/.private/ds_release_date"


def deep_merge(base: dict, over: dict) -> dict:
    """Merge `over` into a copy of `base`; objects merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config() -> dict:
    """The effective configuration: every file of the cascade that exists, merged in order."""
    config: dict = {}
    for name in CONFIG_FILES:
        path = os.path.join(CONFIG_DIR, name)
        if os.path.exists(path):
            with open(path) as fh:
                config = deep_merge(config, json.load(fh))
    return config


def load_build() -> dict:
    """Version, release date and edition baked into the image at build time."""
    with open(BUILD_FILE) as fh:
        return json.load(fh)


def sql_params(config: dict, timeout: int = 3) -> dict:
    """psycopg2 connect() keyword arguments from services.CoAuthoring.sql, bounded by `timeout`."""
    sql = config["services"]["CoAuthoring"]["sql"]
    return {
        "host": sql["dbHost"], "port": int(sql["dbPort"]), "dbname": sql["dbName"],
        "user": sql["dbUser"], "password": sql["dbPass"], "connect_timeout": timeout,
        "options": "-c statement_timeout=%d" % (timeout * 1000),
        "application_name": "docservice",
    }
