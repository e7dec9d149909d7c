"""The requirements of a module that runs as another user: the supervisor installs them (a
package's setup.py runs with its privileges) and shows the installer's errors, so the module's
user must not be able to write them, nor read through them a file it could not read itself."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from orchestrator.config import ModuleSpec
from orchestrator.config.limits import ModuleLimits
from orchestrator.venv import Plan, PlanError, plan_for
from orchestrator.venv.sdk import sdk_parts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="`user:` needs a root supervisor")

NOBODY = pwd.getpwnam("nobody").pw_uid


def plan(path: Path, *, user: str | None = "nobody", lines: tuple[str, ...] | None = None) -> Plan:
    spec = ModuleSpec(
        "esc",
        path.parent / "esc.py",
        requirements=lines,
        requirements_file=None if lines is not None else path,
        limits=ModuleLimits(user=user),
    )
    return plan_for(spec, path.parent / "modules.yaml", path.parent / "cache", sdk_parts())


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A root-owned module directory (no one else may write it) with a requirements.txt."""
    directory = tmp_path / "esc"
    directory.mkdir(mode=0o755)
    requirements = directory / "requirements.txt"
    requirements.write_text("localpkg==1.0\n")
    requirements.chmod(0o644)
    return requirements


def refusal(path: Path, lines: tuple[str, ...] | None = None) -> str:
    with pytest.raises(PlanError) as info:
        plan(path, lines=lines)
    text = str(info.value)
    assert "\n" not in text and "refused for a module that runs as nobody" in text, text
    return text


def test_a_root_owned_file_no_one_else_writes_is_taken(package: Path) -> None:
    assert plan(package).lines == ("localpkg==1.0",)


def test_a_file_the_modules_user_owns_is_refused(package: Path) -> None:
    os.chown(package, NOBODY, -1)
    assert refusal(package).startswith(f"{package}: owned by uid {NOBODY}")
    assert plan(package, user=None).lines == ("localpkg==1.0",)  # runs as the supervisor: as before


def test_a_file_others_may_write_or_replace_is_refused(package: Path) -> None:
    package.chmod(0o666)
    assert refusal(package).startswith(f"{package}: writable by group or others")
    package.chmod(0o644)
    os.chown(package.parent, NOBODY, -1)  # it could rename another file over this one
    assert refusal(package).startswith(f"{package}: {package.parent}: owned by uid {NOBODY}")


def test_an_included_file_is_held_to_the_same_rule(package: Path) -> None:
    extra = package.parent / "extra.txt"
    extra.write_text("-c nested.txt\n")
    extra.chmod(0o644)
    nested = package.parent / "nested.txt"
    nested.write_text("localpkg<2\n")
    nested.chmod(0o644)
    package.write_text("-r extra.txt\nlocalpkg==1.0\n")
    assert plan(package).lines == ("-r extra.txt", "localpkg==1.0")
    os.chown(nested, NOBODY, -1)
    assert refusal(package).startswith(f"{nested}: owned by uid {NOBODY}")
    # The same in a `requirements:` list, relative to modules.yaml's directory.
    assert refusal(package, lines=("--requirement=nested.txt",)).startswith(str(nested))


def test_a_file_the_module_could_not_read_is_not_read_for_it(package: Path) -> None:
    """`-r /etc/shadow`: the installer quoted its lines in the error that status, app.log and
    the module.failed event carry."""
    secret = package.parent / "secret"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    package.write_text(f"-r {secret}\n")
    text = refusal(package)
    assert text.startswith(f"{secret}: not readable by nobody") and "$6$" not in text, text
    package.unlink()
    package.symlink_to(secret)  # the file itself, through a link
    assert refusal(package).startswith(f"{package}: not readable by nobody")


def test_a_nul_in_an_included_name_is_refused_not_raised(package: Path) -> None:
    """`-r ./inc<NUL>x.txt`: os.stat raised ValueError, which ended the supervisor's loop."""
    package.write_text("-r ./inc\0x.txt\n")
    with pytest.raises(PlanError) as info:
        plan(package)
    text = str(info.value)
    assert text.startswith(f"{package}: a NUL character") and "\0" not in text, text
    with pytest.raises(PlanError):
        plan(package, lines=("--requirement=a\0b",))


def test_a_file_is_refused_before_what_it_includes_is_looked_at(package: Path) -> None:
    """An untrusted file is refused for itself: what its `-r` lines name is not stat'ed (status
    would tell the module's user whether such paths exist), nor can it crash the check."""
    package.write_text("-r /no/such/dir/x.txt\n-r ./in\0valid\n")
    os.chown(package, NOBODY, -1)
    assert refusal(package).startswith(f"{package}: owned by uid {NOBODY}")


def test_a_user_that_is_gone_is_a_refusal_not_a_key_error(package: Path) -> None:
    with pytest.raises(PlanError) as info:
        plan(package, user="no-such-user-orchestrator-test")
    assert str(info.value).startswith("user no-such-user-orchestrator-test: "), info.value


def test_a_link_out_of_a_safe_directory_is_judged_where_it_leads(package: Path) -> None:
    """`safe/requirements.txt -> ../open/real.txt`, `open/` mode 0777: anyone could replace it."""
    opened = package.parent.parent / "open"
    opened.mkdir()
    opened.chmod(0o777)
    real = opened / "real.txt"
    real.write_text("localpkg==1.0\n")
    real.chmod(0o644)
    package.unlink()
    package.symlink_to("../open/real.txt")
    assert refusal(package).startswith(f"{package}: {opened}: writable by group or others")
    opened.chmod(0o755)
    assert plan(package).lines == ("localpkg==1.0",)


def test_a_directory_the_modules_user_owns_anywhere_on_the_way_is_refused(package: Path) -> None:
    """`userdir/` (nobody's) holds a root-owned `reqs/`: nobody could rename `reqs/` away and
    put its own in place."""
    userdir = package.parent.parent / "userdir"
    userdir.mkdir()
    package.parent.rename(userdir / "esc")
    moved = userdir / "esc" / "requirements.txt"
    assert plan(moved).lines == ("localpkg==1.0",)
    os.chown(userdir, NOBODY, -1)
    assert f"{userdir}: owned by uid {NOBODY}" in refusal(moved)


def test_a_sticky_directory_may_be_passed_through_but_not_hold_the_file(package: Path) -> None:
    sticky = package.parent.parent / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    inside = sticky / "requirements.txt"
    inside.write_text("localpkg==1.0\n")
    inside.chmod(0o644)
    assert f"{sticky}: writable by group or others" in refusal(inside)
    safe = sticky / "safe"
    safe.mkdir(mode=0o755)
    (safe / "requirements.txt").write_text("localpkg==1.0\n")
    assert plan(safe / "requirements.txt").lines == ("localpkg==1.0",)
    # A link in the sticky directory is its owner's to replace: nobody's is refused.
    link = sticky / "link"
    link.symlink_to(safe)
    os.lchown(link, NOBODY, -1)
    assert f"{link}: owned by uid {NOBODY}" in refusal(link / "requirements.txt")


@pytest.mark.parametrize(
    "line",
    [
        "./pkg",
        "../pkg",
        "/srv/pkg",
        "~/pkg",
        "dist/pkg-1.0.tar.gz",
        "pkg-1.0-py3-none-any.whl",
        "pkg @ file:///srv/pkg",
        "git+file:///srv/pkg.git",
        "-e ./src",
        "--editable=src",
        "--find-links ../wheels",
        "-f/srv/wheels",
        "--index-url file:///srv/index",
    ],
)
def test_a_local_path_to_install_from_is_refused(package: Path, line: str) -> None:
    """What it names (a source tree, a directory of wheels) the module's user may write, and its
    setup.py would run as the supervisor's user."""
    package.write_text(f"six\n{line}\n")
    text = refusal_of_local(package)
    assert text.startswith(f"{package}: {line!r}: a local path is refused"), text
    assert refusal_of_local(package, lines=(line,)).startswith("requirements of esc: ")


def refusal_of_local(path: Path, lines: tuple[str, ...] | None = None) -> str:
    with pytest.raises(PlanError) as info:
        plan(path, lines=lines)
    return str(info.value)


def test_what_comes_from_an_index_is_taken(package: Path) -> None:
    lines = (
        "six==1.16; python_version >= '3.8'",
        "pkg[extra]>=1 --hash=sha256:00",
        "pkg @ https://example.org/pkg-1.0.tar.gz",
        "git+https://example.org/pkg.git",
        "--index-url https://example.org/simple",
        "-f https://example.org/wheels",
        "--no-index",
    )
    package.write_text("\n".join(lines) + "\n")
    assert plan(package).lines == lines
