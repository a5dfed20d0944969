"""Reading a telemhq.toml [[jobs]] table: what each entry becomes, and errors that say which
job and field are wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemhq_plugins.core import JobSchedule, load_settings
from telemhq_plugins.core.jobsfile import JobsFileError, read_jobs


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "telemhq.toml"
    path.write_text(text)
    return path


def test_it_reads_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[jobs]]
job = "nightly-backup"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
grace = 900
assertions = ["files_copied > 0"]
tags = ["backups"]
name = "Nightly backup"
token = "abc"

[[jobs]]
job = "warm"
schedule = 90.5

[[jobs]]
job = "twice"
schedule = ["0 9 * * *", "0 17 * * *"]

[[jobs]]
job = "whenever"
schedule = ""
""",
    )
    assert read_jobs(path) == [
        JobSchedule(
            "nightly-backup",
            "0 3 * * *",
            timezone="Europe/Berlin",
            grace_seconds=900,
            tags=("backups",),
            name="Nightly backup",
            token="abc",
            assertions=("files_copied > 0",),
        ),
        JobSchedule("warm", 90.5),
        JobSchedule("twice", ("0 9 * * *", "0 17 * * *")),
        JobSchedule("whenever", None),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('job = ""', "[[jobs]] #1: job must be a non-empty string"),
        ("schedule = 5", "[[jobs]] #1: job must be a non-empty string"),
        ('job = "a"\nevery = 5', "[[jobs]] #1 (a): unknown field 'every'; the fields are job,"),
        ('job = "a"\nschedule = true', "(a): schedule must be a cron expression"),
        ('job = "a"\nschedule = {cron = "x"}', "(a): schedule must be a cron expression"),
        ('job = "a"\nschedule = -60', "(a): schedule: a period must be a positive number"),
        ('job = "a"\ngrace = -1', "(a): grace must be a number of seconds >= 0, got -1"),
        ('job = "a"\ngrace = "5m"', "(a): grace must be a number of seconds >= 0, got '5m'"),
        ('job = "a"\ntags = "x"', "(a): tags must be a list of strings, got 'x'"),
        ('job = "a"\nassertions = ["rows >"]', "(a): assertions: "),
        ('job = "a"\ntimezone = 1', "(a): timezone must be a non-empty string, got 1"),
        ('job = "a"\nname = ""', "(a): name must be a non-empty string, got ''"),
    ],
)
def test_it_names_the_job_and_field_that_are_wrong(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = write(tmp_path, f"[[jobs]]\n{entry}\n")
    with pytest.raises(JobsFileError) as caught:
        read_jobs(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[jobs]\n", "not valid TOML"),
        ("[telemhq]\nbase_url = 'x'\n", "no [[jobs]] table"),
        ("jobs = 3\n", "jobs must be an array of tables"),
        ('[[jobs]]\njob = "a"\n[[jobs]]\njob = "a"\n', "#2: job 'a' is already entry #1"),
    ],
)
def test_it_refuses_a_file_without_usable_jobs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(JobsFileError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_jobs(write(tmp_path, text))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JobsFileError, match="cannot be read"):
        read_jobs(tmp_path / "nope.toml")


def test_the_settings_reader_ignores_the_jobs_table(tmp_path: Path) -> None:
    flat = write(tmp_path, 'base_url = "http://flat.example"\n[[jobs]]\njob = "a"\n')
    assert load_settings(env={}, config_file=flat).base_url == "http://flat.example"
    table = write(tmp_path, '[telemhq]\ntimeout = 3\n[[jobs]]\njob = "a"\n')
    assert load_settings(env={}, config_file=table).timeout == 3.0
