"""The mapping file: resolved as its comments say, or refused with every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.mapping.load import MappingError, mappings_for, read, resolve
from gateway.mapping.model import ImportBatchMapping, Mappings, OmneoMapping, Subscription

EXAMPLE = Path(__file__).parent.parent.parent / "docs" / "mapping.example.toml"


def problems(text: str, tmp_path: Path, settings: Settings | None = None) -> list[str]:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        read(str(path), settings or Settings())
    return [str(p) for p in caught.value.problems]


def test_the_example_file_resolves_as_its_comments_say() -> None:
    m = read(str(EXAMPLE), Settings())
    ib = m.import_batch
    assert (ib.matching, ib.field_name) == ("custom", "CRM_ID")
    assert (ib.skip_triggers, ib.skip_invalid_subscriptions, ib.detect_geo) == (True, True, False)
    assert ib.fields == {
        "first_name": "_fname",
        "last_name": "_lname",
        "email": "email",
        "phone": "phone",
        "external_id": "CRM_ID",
        "birth_date": "_bdate",
        "attributes.tier": "Tier",
    }
    assert ib.subscriptions == {
        "email": Subscription(resource_id=28),
        "sms": Subscription(resource_id=29),
    }
    assert m.omneo == OmneoMapping(
        match_criteria="crm_id",
        attribute_namespace="crm",
        identities={"crm_id": "external_id"},
        attribute_types={"signup": "date"},
    )
    assert m.ocamba.exclude == frozenset({"phone"})
    assert m.ocamba.attribute_types == {"tier": "string", "order_no": "string", "signup": "date"}
    assert m.source == str(EXAMPLE)


def test_without_a_file_the_defaults_are_todays_and_the_env_settings_apply() -> None:
    settings = Settings(omneo_match_criteria="shopify_id", import_batch_matching="custom")
    m = mappings_for(settings)
    assert m.omneo.match_criteria == "shopify_id"
    assert m.import_batch == ImportBatchMapping(matching="custom")
    assert m.import_batch.field_name == "external_id"
    assert m.import_batch.fields["external_id"] == "external_id"
    assert mappings_for(Settings()) == Mappings()


def test_a_key_the_file_sets_wins_over_its_env_variable_and_the_env_fills_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[omneo]\nmatch_criteria = "crm_id"\n[omneo.identities]\ncrm_id = "external_id"\n'
    )
    settings = Settings(omneo_match_criteria="shopify_id", import_batch_matching="phone")
    m = read(str(path), settings)
    assert m.omneo.match_criteria == "crm_id"
    assert m.import_batch.matching == "phone"
    assert "overrides GATEWAY_OMNEO_MATCH_CRITERIA (shopify_id)" in caplog.text


def test_five_kinds_of_mistakes_are_five_problems_each_with_its_path(tmp_path: Path) -> None:
    text = """
[import_batch]
skip_trigers = true                  # a wrong key
[import_batch.fields]
birth_dat = "_bdate"                 # an unknown normalized field
"attributes.code" = "subscriptions"  # a field the gateway sets
[ocamba.attribute_types]
tier = "text"                        # a type Ocamba does not take
[omneo]
attribute_namespace = 7              # a value of the wrong kind
"""
    found = problems(text, tmp_path)
    assert len(found) == 5, found
    by_path = {line.partition(": ")[0]: line.partition(": ")[2] for line in found}
    assert by_path.keys() == {
        "import_batch.skip_trigers",
        "import_batch.fields.birth_dat",
        'import_batch.fields."attributes.code"',
        "ocamba.attribute_types.tier",
        "omneo.attribute_namespace",
    }
    assert "did you mean skip_triggers?" in by_path["import_batch.skip_trigers"]
    assert "unknown normalized field 'birth_dat'" in by_path["import_batch.fields.birth_dat"]
    assert "did you mean birth_date?" in by_path["import_batch.fields.birth_dat"]
    assert "the gateway sets" in by_path['import_batch.fields."attributes.code"']
    assert "boolean, date, number, string" in by_path["ocamba.attribute_types.tier"]
    assert by_path["omneo.attribute_namespace"] == "must be a string, not an integer"


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("[import_batch]\nmatching = 'emial'", "import_batch.matching", "did you mean email?"),
        (
            "[import_batch]\nmatching = 'custom'\nfield_name = 'CRM_ID'",
            "import_batch.field_name",
            "no field is sent under that name",
        ),
        (
            "[import_batch]\nfield_name = 'CRM_ID'",
            "import_batch.field_name",
            "only sent with matching custom",
        ),
        ("[import_batch]\nexclude = ['email']", "import_batch.exclude[0]", "needs the email"),
        (
            "[import_batch.fields]\nemail = 'mail'",
            "import_batch.fields.email",
            "keep that name",
        ),
        (
            "[import_batch.fields]\nfirst_name = 'email'",
            "import_batch.fields.first_name",
            "'email' is already where email goes",
        ),
        (
            "[import_batch.subscriptions]\nemail = { priority = 1 }",
            "import_batch.subscriptions.email.resource_id",
            "required",
        ),
        (
            "[import_batch]\nexclude = ['consents']\n[import_batch.subscriptions]\n"
            "sms = { resource_id = 3 }",
            "import_batch.subscriptions.sms",
            "excluded",
        ),
        (
            "[import_batch.subscriptions]\npush = { resource_id = 3 }",
            "import_batch.subscriptions.push",
            "unknown key",
        ),
        ("[ocamba]\nexclude = ['email', 'phone']", "ocamba.exclude", "nothing to create"),
        ("[ocamba]\nexclude = ['phon']", "ocamba.exclude[0]", "did you mean phone?"),
        ("[ocamba.fields]\nemail = 'mail'", "ocamba.fields.email", "cannot be mapped here"),
        ("[omneo]\nexclude = ['email']", "omneo.exclude", "no profile could be matched"),
        (
            "[omneo]\nmatch_criteria = 'crm_id'\nexclude = ['external_id']\n"
            "[omneo.identities]\ncrm_id = 'external_id'",
            "omneo.identities.crm_id",
            "excluded",
        ),
        ("[omneo.attribute_types]\nx = 'integer'", "omneo.attribute_types.x", "not one Omneo"),
        ("[omneo]\nunmapped_attributes = 'keep'", "omneo.unmapped_attributes", "send, drop"),
        ("[omneo]\nidentities = 'crm'", "omneo.identities", "must be a table"),
        ("[salesforce]\nx = 1", "salesforce", "unknown key"),
        ("[ocamba\n", "(file)", "not valid TOML"),
    ],
)
def test_each_rule_names_the_path_it_is_about(
    text: str, path: str, words: str, tmp_path: Path
) -> None:
    found = problems(text, tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: "), found
    assert words in found[0]


def test_a_missing_file_is_one_problem_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(MappingError) as caught:
        mappings_for(Settings(mapping_file=missing))
    assert caught.value.lines() == [f"{missing}: (file): cannot be read: No such file or directory"]


def test_an_empty_file_is_the_built_in_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert resolve({}, Settings()) == Mappings()
    assert read(str(path), Settings()) == Mappings(source=str(path))


def test_resend_is_off_unless_the_file_turns_it_on_per_backend(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[omneo]\nresend = true\n")
    m = read(str(path), Settings())
    assert (m.omneo.resend, m.ocamba.resend, m.import_batch.resend) == (True, False, False)
