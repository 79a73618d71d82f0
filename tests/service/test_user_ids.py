"""POST /users checks a new person's ID with the one rule in models/paths.py, matched in full: a trailing
newline used to pass `^...$` and create `users/nlx\\n.json`."""

import pytest

from models.paths import is_new_user_id
from models.pipeline import DopplerPipeline
from tests.service.conftest import serve
from tests.service.test_users import _files

pytestmark = pytest.mark.anyio


def test_the_rule_matches_in_full():
    assert is_new_user_id("dave") and is_new_user_id("d.a_v-e9") and is_new_user_id("d" * 64)
    for bad in ("nlx\n", "dave\n", "", "-dave", ".dave", "d" * 65, "da ve", "da/ve", None, 3):
        assert not is_new_user_id(bad), bad


@pytest.mark.parametrize("user", ["nlx\n", "../x", "-x"])
async def test_post_users_refuses_an_id_matching_only_in_part(make_app, tiny_pipeline_dir, tmp_path, user):
    app = make_app(pipeline=DopplerPipeline.load(tiny_pipeline_dir), users_dir=str(tmp_path / "users"))
    async with serve(app) as client:
        r = await client.post("/users", data={"user_id": user}, files=_files())
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "user_id", r.text
    assert not (tmp_path / "users").exists() or not list((tmp_path / "users").iterdir())


def test_a_users_folder_entry_with_an_invalid_name_is_skipped(tmp_path):
    """An entry written before IDs were matched in full (`nlx\\n.json`) is skipped with its reason, not
    served."""
    from service.users_folder import UsersFolder

    (tmp_path / "nlx\n.json").write_text("{}")
    entries, skipped = UsersFolder(tmp_path).load(row_width=8)
    assert entries == [] and [(s.file, s.reason) for s in skipped] == [("nlx\n.json", "not a valid user ID")]
