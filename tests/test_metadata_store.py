"""The metadata store option without a server: parsing --metadata-mysql, the password kept off the
command line and out of log records, and the connection config TFX receives."""

import argparse
import logging

import pytest

from bertqa.operations import metadata_store
from bertqa.operations.metadata_store import MySqlStore


def test_server_option_parses_user_host_port_and_database():
    assert MySqlStore.from_url("bertqa@db.internal") == MySqlStore("db.internal", 3306, "bertqa_metadata", "bertqa")
    assert MySqlStore.from_url("mysql://ops@10.0.0.5:3307/team_md") == MySqlStore("10.0.0.5", 3307, "team_md", "ops")
    assert MySqlStore.from_url("ops@10.0.0.5:3307/team_md").describe() == "mysql://ops@10.0.0.5:3307/team_md"


@pytest.mark.parametrize("text", ["db.internal", "ops@", "ops@host:port", "ops@host/bad-name", ""])
def test_server_option_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="USER@HOST"):
        MySqlStore.from_url(text)


def test_password_in_the_option_is_refused_and_not_echoed():
    parser = argparse.ArgumentParser()
    metadata_store.add_metadata_server_arg(parser)
    with pytest.raises(ValueError) as refused:
        MySqlStore.from_url("ops:hunter2@db.internal")
    assert metadata_store.PASSWORD_ENV in str(refused.value) and "hunter2" not in str(refused.value)
    assert parser.parse_args(["--metadata-mysql", "ops@db"]).metadata_mysql == MySqlStore("db", user="ops")


def test_connection_config_takes_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv(metadata_store.PASSWORD_ENV, "s3cret")
    config = MySqlStore.from_url("ops@db:3307/md").connection_config()
    assert (config.mysql.host, config.mysql.port, config.mysql.database, config.mysql.user,
            config.mysql.password) == ("db", 3307, "md", "ops", "s3cret")
    monkeypatch.delenv(metadata_store.PASSWORD_ENV)
    with pytest.raises(metadata_store.MetadataStoreError, match=metadata_store.PASSWORD_ENV):
        MySqlStore.from_url("ops@db").connection_config()


def test_log_records_mask_the_password_raw_and_as_protobuf_text(monkeypatch, caplog):
    password = "pa'ss\\word"
    monkeypatch.setenv(metadata_store.PASSWORD_ENV, password)
    store = MySqlStore.from_url("ops@db")
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())  # restored afterwards
    metadata_store.keep_password_out_of_logs(store)
    with caplog.at_level(logging.INFO):
        logging.getLogger("tfx").info("Using connection config:\n %s", store.connection_config())
        logging.getLogger("other").warning("connecting with %s", password)
        logging.getLogger("other").info("the password: field is unrelated here")
    text = caplog.text
    assert "ss\\word" not in text and "ss\\\\word" not in text and "pa\\'ss" not in text
    assert 'password: "***"' in text and "connecting with ***" in text
    assert "the password: field is unrelated here" in text
