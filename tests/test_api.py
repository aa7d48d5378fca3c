"""The use-case layer every front end calls: its key and vault policy, and its functions on a real file."""

import os

import pytest

from refacex_plugin import api
from refacex_plugin.anonymisers import available_methods, default_method
from refacex_plugin.errors import RefacexError
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import write_key_file

KEY = os.urandom(32)
VAULT = "faces.vault"  # validation never opens it
UNKNOWN = "unknown method 'no-such-method'"

# (settings, use, what is refused: None when allowed)
POLICY = [
    (api.Settings(), "anonymise", None),
    (api.Settings(key=KEY, vault=VAULT), "anonymise", None),
    (api.Settings(method="pixelate", key=KEY, vault=VAULT), "anonymise", None),
    (api.Settings(vault=VAULT), "anonymise", api.VAULT_NEEDS_KEY),
    (api.Settings(method="pixelate", vault=VAULT), "anonymise", api.VAULT_NEEDS_KEY),
    (api.Settings(key=KEY), "anonymise", "default-method"),
    (api.Settings(method="pixelate", key=KEY), "anonymise", api.irreversible_message("pixelate")),
    (api.Settings(method="blur", key=KEY), "anonymise", api.irreversible_message("blur")),
    (api.Settings(method="no-such-method"), "anonymise", UNKNOWN),
    (api.Settings(method="pixelate", donor_policy="sometimes"), "anonymise", "unknown donor policy 'sometimes'"),
    (api.Settings(method="blur", donors="bank.npz"), "anonymise", "method 'blur' uses no donors"),
    (api.Settings(donors="bank.npz"), "anonymise", None),  # the composite draws from a user's bank
    (api.Settings(key=KEY, vault=VAULT), "recover", None),
    (api.Settings(key=KEY), "recover", None),  # approximate recovery from the payloads' codes
    (api.Settings(), "recover", api.RECOVERY_NEEDS_KEY),
    (api.Settings(vault=VAULT), "recover", api.VAULT_NEEDS_KEY),
    (api.Settings(), "read", None),
    (api.Settings(key=KEY), "read", None),  # reading payloads needs no vault
    (api.Settings(vault=VAULT), "read", api.VAULT_NEEDS_KEY),
]


@pytest.mark.parametrize("settings, use, refused", POLICY)
def test_policy_table(settings, use, refused):
    if refused == "default-method":  # the best method here: refacex's composite, irreversible
        refused = api.irreversible_message(default_method())
    if refused is None:
        api.validate(settings, use)
        return
    with pytest.raises(RefacexError) as exc:
        api.validate(settings, use)
    assert str(exc.value).startswith(refused) and "\n" not in str(exc.value)


def test_a_reversible_method_takes_a_key_without_a_vault():
    if "generator" not in available_methods():
        pytest.skip("the generator's weights are not installed")
    assert api.validate(api.Settings(method="generator", key=KEY)) == "generator"


def test_the_key_never_shows():
    s = api.Settings(key=KEY, vault=VAULT)
    assert KEY.hex() not in repr(s) and repr(KEY) not in repr(s) and "key" not in repr(s)


def test_settings_load_reads_the_key_and_treats_empty_as_unset(tmp_path):
    write_key_file(tmp_path / "k.key")
    s = api.Settings.load(tmp_path / "k.key", vault="", method="")
    assert s.key is not None and len(s.key) == 32 and s.vault is None and s.method is None
    assert api.Settings.load(None).key is None


def test_anonymise_read_recover_through_one_session_each(tmp_path, example_image):
    """The three use cases on a real file: payloads sealed with the key, originals in the vault,
    the very file back."""
    vault = tmp_path / "faces.vault"
    settings = api.Settings(method="pixelate", key=KEY, vault=vault)
    with api.Session(settings) as session:
        assert session.reversible and session.method == "pixelate"
        res = api.anonymise_file(session, example_image, tmp_path / "anon" / example_image.name)
    assert res.faces and res.vault_records == len(res.faces) and vault.is_file()
    with api.Session(api.Settings(), "read") as reader:
        faces = api.read_payloads(reader, res.dst, [KEY])
    assert any(f.authenticated for f in faces)
    with pytest.raises(ValueError, match="opened to read"):
        api.anonymise_file(reader, example_image, tmp_path / "x.jpg")
    with api.Session(api.Settings(key=KEY, vault=vault), "recover") as session:
        back = api.recover_file(session, res.dst, tmp_path / "back" / example_image.name)
    assert back.original and back.dst.read_bytes() == example_image.read_bytes()
    assert read_image(back.dst).rgb.shape == read_image(example_image).rgb.shape


def test_a_refused_session_opens_no_vault(tmp_path):
    with pytest.raises(RefacexError, match="irreversible"):
        api.Session(api.Settings(method="pixelate", key=KEY))
    with pytest.raises(RefacexError, match="no such vault"):
        api.Session(api.Settings(key=KEY, vault=tmp_path / "missing.vault"), "recover")
    assert not (tmp_path / "missing.vault").exists()
