"""Declarative CSV mappings: the example Communication mapping, load-time validation with
clear errors, conversions, header matching and the unrecognised-CSV reasons."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from csv_helpers import DATA, REPO, make_context, run_file

from dropzone.config import Settings, TenantSettings
from dropzone.errors import FileRejected
from dropzone.store.memory import MemoryStore
from processors.csv_claims.mapped import MappedCsvProcessor, UnrecognisedCsvProcessor
from processors.csv_claims.mapping_engine import ID_NAMESPACE, MappingEngine
from processors.csv_claims.mapping_schema import MappingError, load_mapping

CONFIG = REPO / "config"
EXAMPLE = CONFIG / "mappings" / "outreach-communication.yaml"
CONTACTS = DATA / "csv" / "outreach_contacts.csv"


def tenant(*mappings: str) -> TenantSettings:
    return TenantSettings(name="acme", mappings=list(mappings))


def write_mapping(folder: Path, name: str, body: str) -> Path:
    path = folder / "mappings" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


MINIMAL = textwrap.dedent(
    """\
    match:
      columns: [id, when]
    resources:
      - resource_type: Communication
        id: "c-{id}"
        elements:
          status: {value: completed}
          sent: {column: when, type: datetime}
"""
)


# -- the shipped example --------------------------------------------------------------------------


def test_example_mapping_loads_the_sample_into_valid_communications() -> None:
    settings = Settings(config_dir=CONFIG)
    run = run_file(CONTACTS, MemoryStore(), tenant("outreach-communication"), settings)
    assert type(run.processor).name == "csv-mapping"
    assert run.processor.report_details() == {"mapping": "outreach-communication"}
    assert not run.invalid
    communications = {c["id"]: c for c in run.resources("Communication")}
    assert sorted(communications) == [
        "outreach-C-1001",
        "outreach-C-1002",
        "outreach-C-1003",
        "outreach-C-1007",
    ]
    first = communications["outreach-C-1001"]
    assert first["status"] == "completed"
    assert first["subject"] == {"reference": "Patient/P001"}
    assert first["sent"] == "2024-03-01T09:15:00-05:00"  # the mapping's time zone
    assert first["medium"][0]["coding"][0]["code"] == "PHONE"
    assert first["note"] == [{"text": "Spoke with member, booked appointment"}]
    bounced = communications["outreach-C-1003"]
    assert bounced["status"] == "not-done"
    assert bounced["statusReason"] == {"text": "Message could not be delivered"}
    assert bounced["note"][0]["text"] == 'Address "unknown"; asked\r\nfront desk to update'  # quoted CRLF
    assert "statusReason" not in first  # outcome_reason: on_unknown omit
    assert "category" in communications["outreach-C-1007"]  # coding kept though campaign was N/A
    assert "text" not in communications["outreach-C-1007"]["category"][0]


def test_example_mapping_rejects_bad_rows_with_column_and_no_value() -> None:
    run = run_file(CONTACTS, MemoryStore(), tenant("outreach-communication"), Settings(config_dir=CONFIG))
    problems = {r.index: (r.issues[0].code, r.issues[0].path) for r in run.rejected}
    assert problems == {
        4: ("invalid_value", "contact_datetime"),  # 2024-02-30
        5: ("unknown_code", "channel"),  # pigeon
        6: ("missing_value", "member_id"),  # NULL is a null value in this mapping
        8: ("field_count", None),
    }
    text = " ".join(i.message for r in run.rejected for i in r.issues)
    for value in ("2024-02-30", "pigeon", "C-1005", "P005"):
        assert value not in text


def test_rejects_file_holds_header_and_original_rows() -> None:
    run = run_file(CONTACTS, MemoryStore(), tenant("outreach-communication"), Settings(config_dir=CONFIG))
    import io

    out = io.BytesIO()
    run.processor.write_rejects({r.index for r in run.rejected}, out)
    lines = CONTACTS.read_bytes().split(b"\r\n")
    expected = b"\r\n".join([lines[0], lines[5], lines[6], lines[7], lines[9]]) + b"\r\n"
    assert out.getvalue() == expected


# -- load-time validation ---------------------------------------------------------------------------


def test_example_mapping_is_valid() -> None:
    mapping = load_mapping(EXAMPLE)
    assert mapping.name == "outreach-communication"
    assert mapping.resources[0].resource_type == "Communication"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (MINIMAL.replace("match:", "mach:"), "mach: Extra inputs are not permitted"),
        (MINIMAL.replace("{value: completed}", "{value: completed, column: id}"), "exactly one of"),
        (MINIMAL.replace("column: when", "column: whn"), "column 'whn' is not declared"),
        (MINIMAL.replace('"c-{id}"', '"c-{ident}"'), "resources[0].id: column 'ident'"),
        (MINIMAL.replace('"c-{id}"', '"c-{id:>5}"'), "plain {column} placeholders"),
        (MINIMAL.replace("type: datetime", "type: datetime, lookup: zones"), "lookup 'zones' is not defined"),
        (MINIMAL.replace("type: datetime", "type: timestamp"), "resources.0.elements.sent.type"),
        (MINIMAL.replace("Communication", "Comunication"), "'Comunication' is not a FHIR R4 resource type"),
        (MINIMAL.replace("sent:", "sent[x]:"), "not an element path"),
        (MINIMAL.replace("status:", "id:"), "set by the mapping itself"),
        (
            MINIMAL + "      subject: {value: {reference: Patient/1}}\n"
            "      subject.reference: {column: id}\n",
            "'subject' overlaps 'subject.reference'",
        ),
        (
            MINIMAL.replace("sent: {column", "sendt: {column"),
            "element 'sendt': Communication has no element 'sendt' in R4",
        ),
        (MINIMAL.replace("{value: completed}", "{value: [1, 2]}"), "element 'status'"),
        ("match: [a]\n", "match: Input should be a valid dictionary"),
        (MINIMAL + "timezone: Mars/Olympus\n", "unknown time zone"),
        (MINIMAL + "name: other\n", "must match the file name"),
        ("match: {columns: [a]\n", "not valid YAML"),
        (MINIMAL.replace("type: datetime", "type: string, formats: ['%Y']"), "only applies to type date"),
        (
            MINIMAL + "lookups:\n  flag: {yes: true, no: false}\n",
            "lookups: table 'flag' has key True, which is not text (quote it",
        ),
    ],
)
def test_invalid_mappings_fail_at_load_with_a_clear_error(tmp_path: Path, body: str, expected: str) -> None:
    path = write_mapping(tmp_path, "broken", body)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    body = MINIMAL.replace("column: when", "column: whn").replace('"c-{id}"', '"c-{ident}"')
    with pytest.raises(MappingError) as caught:
        load_mapping(write_mapping(tmp_path, "two", body))
    assert "'whn'" in str(caught.value) and "'ident'" in str(caught.value)


def test_missing_mapping_file_quarantines_with_the_reason(tmp_path: Path) -> None:
    settings = Settings(config_dir=tmp_path)
    run_path = tmp_path / "x.csv"
    run_path.write_text("id,when\n1,2024-01-01\n")
    processor = MappedCsvProcessor(make_context(run_path, MemoryStore().resources, tenant("nope"), settings))
    with pytest.raises(FileRejected) as caught:
        list(processor.records())
    assert caught.value.code == "mapping_error" and "does not exist" in caught.value.message


# -- conversions, ids and matching ------------------------------------------------------------------


def engine_for(tmp_path: Path, body: str, header: list[str]) -> MappingEngine:
    return MappingEngine(load_mapping(write_mapping(tmp_path, "m", body)), header)


def test_types_and_lookups(tmp_path: Path) -> None:
    body = """\
        match: {columns: [ID, Birth, Active, Count, Amount, Kind]}
        timezone: UTC
        lookups:
          kind: {Home: {system: "http://terminology.hl7.org/CodeSystem/v3-AddressUse", code: H}}
        resources:
          - resource_type: Patient
            id: {uuid5: "{ID}"}
            elements:
              birthDate: {column: Birth, type: date, formats: ["%d/%m/%Y"]}
              active: {column: Active, type: boolean}
              multipleBirthInteger: {column: Count, type: integer}
              extension[0].url: {value: "urn:example:amount"}
              extension[0].valueDecimal: {column: Amount, type: decimal}
              meta.tag[0]: {column: Kind, lookup: kind, on_unknown: keep}
    """
    engine = engine_for(tmp_path, body, ["id", "birth", "active", "count", "amount", "kind"])
    (patient,), issues = engine.apply(["p1", "31/01/1950", "Yes", "2", "12.50", " home "])
    assert not issues
    assert patient["id"] == str(uuid.uuid5(ID_NAMESPACE, "m|Patient|p1"))
    assert patient["birthDate"] == "1950-01-31"
    assert patient["active"] is True and patient["multipleBirthInteger"] == 2
    assert patient["extension"] == [{"url": "urn:example:amount", "valueDecimal": 12.5}]
    assert patient["meta"]["tag"][0]["code"] == "H"  # lookups ignore case and spaces
    _, issues = engine.apply(["p1", "1950-01-31", "perhaps", "two", "1e3", "x"])
    assert [(i.code, i.path) for i in issues] == [
        ("invalid_value", "Birth"),
        ("invalid_value", "Active"),
        ("invalid_value", "Count"),
        ("invalid_value", "Amount"),
    ]


def test_template_id_must_be_a_fhir_id(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, MINIMAL, ["id", "when"])
    _, issues = engine.apply(["has space", "2024-01-01"])
    assert issues[0].code == "invalid_id"
    (resource,), issues = engine.apply(["A-1", "2024-01-01T10:00:00Z"])
    assert not issues and resource["id"] == "c-A-1" and resource["sent"] == "2024-01-01T10:00:00+00:00"


def test_empty_optional_sources_leave_no_trace(tmp_path: Path) -> None:
    body = MINIMAL.replace("columns: [id, when]", "columns: [id, when]\n  optional: [a, b]")
    body += "      identifier[0].value: {column: a}\n      identifier[1].value: {column: b}\n"
    engine = engine_for(tmp_path, body, ["id", "when", "a", "b"])
    (resource,), _ = engine.apply(["1", "2024-01-01", "", "kept"])
    assert resource["identifier"] == [{"value": "kept"}]


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        (
            "contact_id,member_id,contact_datetime,channel,outcome\nC-1,P1,2024-03-01 09:15,phone,reached\n",
            True,
        ),
        (
            "CONTACT_ID , Member_ID,contact_datetime,channel,outcome,extra\n"
            "C-1,P1,2024-03-01 09:15,phone,reached,x\n",
            True,
        ),
        (
            "contact_id|member_id|contact_datetime|channel|outcome\nC-1|P1|2024-03-01 09:15|phone|reached\n",
            True,
        ),
        ("contact_id,member_id,channel,outcome\nC-1,P1,phone,reached\n", False),
    ],
)
def test_header_matching(tmp_path: Path, text: str, matches: bool) -> None:
    path = tmp_path / "list.csv"
    path.write_text(text)
    context = make_context(
        path, MemoryStore().resources, tenant("outreach-communication"), Settings(config_dir=CONFIG)
    )
    processor = MappedCsvProcessor(context)
    if matches:
        records = list(processor.records())
        assert records[0].resources and not records[0].issues
    else:
        with pytest.raises(FileRejected) as caught:
            list(processor.records())
        assert "outreach-communication: missing contact_datetime" in caught.value.message


def test_unknown_csv_without_mappings_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "mystery.csv"
    path.write_text("secret_name,ssn_like\nJohn,123\n")
    run_context = make_context(path, MemoryStore().resources)
    with pytest.raises(FileRejected) as caught:
        list(UnrecognisedCsvProcessor(run_context).records())
    message = caught.value.message
    assert caught.value.code == "unknown_csv_layout"
    assert "not recognised" in message and "declares no CSV mappings" in message
    assert "secret_name" not in message and "John" not in message  # never echo the file


def test_near_miss_synpuf_header_names_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "pde.csv"
    path.write_text("DESYNPUF_ID,PDE_ID,SRVC_DT,PROD_SRVC_ID,QTY_DSPNSD_NUM,DAYS_SUPLY_NUM,PTNT_PAY_AMT\n")
    with pytest.raises(FileRejected) as caught:
        list(UnrecognisedCsvProcessor(make_context(path, MemoryStore().resources)).records())
    assert "closest: Prescription Drug Events, missing TOT_RX_CST_AMT" in caught.value.message


# -- dropzone check-mappings ------------------------------------------------------------------------


def test_check_mappings_command(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from dropzone.cli import main

    folder = tmp_path / "config"
    write_mapping(folder, "good", MINIMAL)
    write_mapping(folder, "bad", MINIMAL.replace("column: when", "column: whn"))
    (folder / "tenants").mkdir()
    (folder / "tenants" / "acme.yaml").write_text("mappings: [good, missing]\n")
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(folder), "check-mappings", "--json"])
    assert result.exit_code == 2
    found = {m["name"]: m for m in json.loads(result.output)["mappings"]}
    assert found["good"]["valid"] and found["good"]["tenants"] == ["acme"]
    assert "column 'whn' is not declared" in found["bad"]["error"]
    assert "does not exist" in found["missing"]["error"]
    result = runner.invoke(main, ["--config", str(folder), "check-mappings", "good"])
    assert result.exit_code == 0 and "ok       good (tenants: acme)" in result.output
