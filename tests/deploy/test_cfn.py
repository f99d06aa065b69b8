"""The CloudFormation template for EFS passes cfn-lint and says what the issue asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.deploy import CFN_TEMPLATE

cfnlint = pytest.importorskip("cfnlint", reason="cfn-lint is not installed (pip install cfn-lint)")


def _template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, matches = decode(str(CFN_TEMPLATE))
    assert not matches, matches
    assert isinstance(template, dict)
    return template


def test_template_passes_cfn_lint() -> None:
    """cfn-lint's API with its default rules, as `cfn-lint deploy/aws/efs.yml` runs them
    (in process: the command line costs seconds of start-up on a 2-core runner)."""
    from cfnlint.api import lint_file

    matches = lint_file(CFN_TEMPLATE)
    assert matches == [], [str(m) for m in matches]


def test_cfn_lint_catches_a_broken_copy(tmp_path: Path) -> None:
    """The check above can fail: the same template with two mistakes does."""
    from cfnlint.api import lint_file

    broken = tmp_path / "efs.yml"
    text = CFN_TEMPLATE.read_text()
    text = text.replace("ThroughputMode: elastic", "ThroughputMode: elasticx", 1)
    text = text.replace("FromPort: 2049", "FromPort: nfs", 1)
    broken.write_text(text)
    rules = {m.rule.id for m in lint_file(broken)}
    assert {"E3030", "E3012"} <= rules


def test_file_system_is_encrypted_general_purpose_elastic_with_ia() -> None:
    fs = _template()["Resources"]["FileSystem"]
    props = fs["Properties"]
    assert props["Encrypted"] is True
    assert props["PerformanceMode"] == "generalPurpose"
    assert props["ThroughputMode"] == "elastic"
    policies = props["LifecyclePolicies"]
    assert {"TransitionToIA": {"Ref": "TransitionToIA"}} in policies
    assert {"TransitionToPrimaryStorageClass": "AFTER_1_ACCESS"} in policies
    assert fs["DeletionPolicy"] == "Retain"


def test_nfs_is_admitted_only_from_the_ray_nodes_group() -> None:
    resources = _template()["Resources"]
    ingress = resources["EfsSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert len(ingress) == 1
    rule = ingress[0]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 2049, 2049)
    assert "CidrIp" not in rule and "CidrIpv6" not in rule
    assert rule["SourceSecurityGroupId"] == {
        "Fn::If": [
            "CreateRayNodesSecurityGroup",
            {"Ref": "RayNodesSecurityGroup"},
            {"Ref": "RayNodesSecurityGroupId"},
        ]
    }
    # nothing in the template admits traffic from an address range
    for name, res in resources.items():
        props = res.get("Properties", {}) if isinstance(res, dict) else {}
        for entry in props.get("SecurityGroupIngress", []):
            assert "CidrIp" not in entry, name
        assert "CidrIp" not in props or res["Type"] != "AWS::EC2::SecurityGroupIngress", name


def test_a_mount_target_per_subnet() -> None:
    foreach = _template()["Resources"]["Fn::ForEach::MountTargets"]
    variable, collection, body = foreach
    assert variable == "SubnetId" and collection == {"Ref": "SubnetIds"}
    (logical_id, target), *_ = body.items()
    assert "&{SubnetId}" in logical_id
    assert target["Type"] == "AWS::EFS::MountTarget"
    assert target["Properties"]["SubnetId"] == {"Ref": "SubnetId"}
    assert target["Properties"]["SecurityGroups"] == [{"Ref": "EfsSecurityGroup"}]


def test_access_point_has_a_fixed_identity_and_root() -> None:
    template = _template()
    ap = template["Resources"]["AccessPoint"]["Properties"]
    assert ap["PosixUser"] == {"Uid": {"Ref": "PosixUid"}, "Gid": {"Ref": "PosixGid"}}
    assert ap["RootDirectory"]["Path"] == {"Ref": "RootDirectoryPath"}
    info = ap["RootDirectory"]["CreationInfo"]
    assert info["OwnerUid"] == {"Ref": "PosixUid"} and info["Permissions"] == "0750"
    params = template["Parameters"]
    assert (params["PosixUid"]["Default"], params["PosixGid"]["Default"]) == (1000, 100)


def test_policy_requires_tls() -> None:
    template = _template()
    assert template["Parameters"]["RequireTls"]["Default"] == "true"
    statement = template["Resources"]["FileSystem"]["Properties"]["FileSystemPolicy"]["Statement"]
    condition, with_tls, _without = statement["Fn::If"]
    assert condition == "RequireTls"
    deny = [s for s in with_tls if s["Effect"] == "Deny"]
    assert deny == [
        {
            "Sid": "DenyWithoutTls",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    allow = next(s for s in with_tls if s["Effect"] == "Allow")
    assert "elasticfilesystem:ClientRootAccess" not in allow["Action"]
