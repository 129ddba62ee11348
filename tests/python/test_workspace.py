"""The workspace's own hygiene, read from its files: every dependency `[workspace.dependencies]`
pins is used by some member (a pin nothing uses drifts unnoticed), and every member listed
exists."""
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_workspace_dependency_is_used_by_a_member():
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    members = [tomllib.loads((ROOT / m / "Cargo.toml").read_text()) for m in workspace["members"]]
    used = set()
    for m in members:
        for table in ("dependencies", "dev-dependencies", "build-dependencies"):
            for name, spec in m.get(table, {}).items():
                if isinstance(spec, dict) and spec.get("workspace"):
                    used.add(name)
    unused = sorted(set(workspace["dependencies"]) - used)
    assert not unused, f"[workspace.dependencies] pins what no member uses: {unused}"
    assert len(members) >= 10 and used, "read the members"
