"""The chart as a Kubernetes security scanner sees it: checkov on the manifests
of every value set the chart tests render. A failed check fails the test unless
it is in ACCEPTED, where each entry says why the chart leaves it to the user."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.deploy import checkov
from tests.deploy.chart import Manifest, only, render
from tests.deploy.test_chart import HARDENED_POSTGRESQL, HARDENED_SQLITE, VALUE_SETS

# check id -> why a failure of it is the user's choice, not the chart's fault.
ACCEPTED = {
    # "Image should use digest": which tag to run is the user's choice;
    # image.digest runs the image by digest and passes.
    "CKV_K8S_43": "a tag is the user's choice; image.digest pins the image",
    # "Image Pull Policy should be Always": IfNotPresent with a tag pulls once per
    # node and works with images loaded into the node; image.digest (or
    # image.pullPolicy: Always for a tag that is pushed again) passes.
    "CKV_K8S_15": "IfNotPresent is right for an immutable tag; image.digest passes",
    # "Minimize the admission of pods which lack an associated NetworkPolicy":
    # which namespaces call the gateway and where PostgreSQL runs are the
    # cluster's to say; networkPolicy.enabled renders one for every pod.
    "CKV2_K8S_6": "needs the cluster's namespaces; networkPolicy.enabled passes",
}
# Value sets that must pass every check, accepted ones included.
STRICT = {HARDENED_POSTGRESQL, HARDENED_SQLITE}


def scan(manifests: list[Manifest], directory: Path) -> checkov.Report:
    for i, m in enumerate(manifests):
        path = directory / f"{i:02d}-{m.kind.lower()}-{m.name}.yaml"
        path.write_text(yaml.safe_dump(m.doc, sort_keys=False))
    return checkov.scan(directory)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_checkov_fails_nothing_but_the_accepted_checks(name: str, tmp_path: Path) -> None:
    manifests = render(VALUE_SETS[name])
    report = scan(manifests, tmp_path)
    # Scanned for real: every object is there and most checks apply to it.
    assert report.passed >= 80, report
    unexpected = [f for f in report.failures if f.check_id not in ACCEPTED]
    assert unexpected == []
    if name in STRICT:
        assert report.failures == []


def test_each_accepted_check_is_still_failed_by_the_defaults(tmp_path: Path) -> None:
    """An entry the defaults no longer fail is stale: it goes."""
    report = scan(render(), tmp_path)
    assert {f.check_id for f in report.failures} == set(ACCEPTED)


def test_checkov_finds_what_it_should(tmp_path: Path) -> None:
    """The scan is not vacuous: a privileged container, secrets as environment
    variables and a writable root file system are reported."""
    manifests = render({"image": {"digest": "sha256:" + "0" * 64}})
    deploy = copy.deepcopy(only(manifests, "Deployment"))
    (c,) = deploy.doc["spec"]["template"]["spec"]["containers"]
    c["securityContext"] |= {"privileged": True, "readOnlyRootFilesystem": False}
    c["envFrom"].append({"secretRef": {"name": "tokens"}})
    others = [m for m in manifests if m.kind != "Deployment"]
    report = scan([*others, deploy], tmp_path)
    found = {f.check_id for f in report.failures}
    assert {"CKV_K8S_16", "CKV_K8S_22", "CKV_K8S_35"} <= found, found
