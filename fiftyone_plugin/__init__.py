"""refacex FiftyOne plugin: anonymise faces in a dataset in place, evaluate, extract, recover.

Point ``FIFTYONE_PLUGINS_DIR`` at the folder holding this one (or ``fiftyone plugins create``
/ copy it there). The key comes from the ``REFACEX_KEY_FILE`` plugin secret (an environment
variable in open-source FiftyOne): the path of a key file made by ``refacex keygen``. It is
never a parameter, so it is never stored in the dataset. The vault is the ``vault`` parameter
or, when that is empty, the ``REFACEX_VAULT`` secret, in every operator that reads the key (so
a run from the SDK or a delegated run, where no form filled the parameter, is reversible too).
Every operator calls :mod:`refacex_fiftyone.api`, which runs the use cases of
:mod:`refacex_plugin.api`: the key and vault policy is the CLI's and the Label Studio backend's.
"""

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

import refacex_fiftyone.api as api
from refacex_plugin import api as refacex_api
from refacex_plugin.anonymisers import available_methods, default_method
from refacex_plugin.errors import RefacexError

_DELEGATE_ABOVE = 200  # samples
_WAIT_S = 2 * 3600  # longest a delegated evaluate waits for a running anonymize on its dataset (its worker may have died)


def _progress(ctx):
    return lambda frac, label: ctx.set_progress(progress=frac, label=label)


def _secret(ctx, name):
    try:
        return ctx.secrets.get(name) or None
    except Exception:  # secrets resolver unavailable
        return None


def _vault(ctx):
    """The run's vault: the parameter when given, else the REFACEX_VAULT secret."""
    return ctx.params.get("vault") or _secret(ctx, "REFACEX_VAULT")


def _refused(key_file, vault, method):
    """Why anonymising with these settings would be refused (:func:`refacex_plugin.api.validate`), or None."""
    try:
        refacex_api.validate(refacex_api.Settings.load(key_file, vault=vault, method=method))
    except RefacexError as exc:
        return str(exc)
    return None


def _target(ctx, inputs):
    inputs.view_target(ctx)
    return ctx.target_view()


def _delegate(ctx):
    if "delegate" in ctx.params:
        return bool(ctx.params["delegate"])
    return len(ctx.target_view()) > _DELEGATE_ABOVE


class AnonymizeFaces(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="anonymize_faces",
            label="refacex: anonymize faces",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = _target(ctx, inputs)
        methods = available_methods()
        inputs.enum("method", methods, default=default_method(), label="Method", view=types.DropdownView())
        inputs.float("strength", default=1.0, label="Strength", description="Privacy/utility dial (1 = the method's default)")
        inputs.enum(
            "target",
            ["replace", "field"],
            default="replace",
            label="Write to",
            description="replace: point filepath at the anonymised media; field: store it in a new media field",
        )
        inputs.str("media_field", default="anonymized_filepath", label="Media field (target=field)")
        inputs.bool("keep_originals", default=False, label="Keep original paths in a field")
        inputs.str("output_dir", required=False, label="Output folder (default: FiftyOne's dataset dir)")
        key = _secret(ctx, "REFACEX_KEY_FILE")
        inputs.str(
            "vault",
            default=_secret(ctx, "REFACEX_VAULT") or "",
            required=False,
            label="Vault: a file or a mongodb:// URI (needs the key secret; default: the REFACEX_VAULT secret)",
        )
        inputs.bool("delegate", default=len(view) > _DELEGATE_ABOVE, label="Delegate (background)")
        refused = _refused(key, _vault(ctx), ctx.params.get("method") or None)
        if refused:
            where = " (the key is the REFACEX_KEY_FILE secret, the vault the parameter or the REFACEX_VAULT secret)"
            inputs.view("error", types.Error(label=refused + where))
        elif not key:
            inputs.view("warning", types.Warning(label="No REFACEX_KEY_FILE secret: anonymisation will be irreversible"))
        elif not _vault(ctx):
            inputs.view("warning", types.Warning(label="No vault (parameter or REFACEX_VAULT secret): recovery will be approximate"))
        return types.Property(inputs, view=types.View(label=f"Anonymize faces in {len(view)} samples"))

    def resolve_delegation(self, ctx):
        return _delegate(ctx)

    def execute(self, ctx):
        p = ctx.params
        key = _secret(ctx, "REFACEX_KEY_FILE")
        vault = _vault(ctx)
        try:
            return api.anonymize_samples(
                ctx.target_view(),
                method=p.get("method"),
                strength=float(p.get("strength", 1.0)),
                key_file=key,
                vault=vault,
                output_dir=p.get("output_dir") or None,
                target=p.get("target", "replace"),
                media_field=p.get("media_field") or "anonymized_filepath",
                keep_originals=bool(p.get("keep_originals")),
                progress=_progress(ctx),
            )
        except RefacexError as exc:
            raise ValueError(str(exc)) from None


class EvaluateAnonymization(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_anonymization",
            label="refacex: evaluate anonymization",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = _target(ctx, inputs)
        inputs.str(
            "vault",
            default=_secret(ctx, "REFACEX_VAULT") or "",
            required=False,
            label="Vault: a file or a mongodb:// URI (identity distance when the originals are not kept; needs the key secret)",
        )
        inputs.bool("skip_pending", default=False, label="Evaluate only the samples already anonymized")
        pending = api.pending_count(view)
        if pending:
            inputs.view("pending", types.Warning(label=f"{pending} of {len(view)} samples are not anonymized yet"))
        return types.Property(inputs, view=types.View(label="Evaluate anonymization"))

    def resolve_delegation(self, ctx):
        return _delegate(ctx)

    def execute(self, ctx):
        view = ctx.target_view()
        if ctx.delegated:
            self._wait_for_anonymization(ctx, view)
        key = _secret(ctx, "REFACEX_KEY_FILE")
        try:  # without the key the vault is unreadable: the summary's identity note says what is missing
            return api.evaluate_samples(
                view,
                progress=_progress(ctx),
                key_file=key,
                vault=_vault(ctx) if key else None,
                skip_pending=bool(ctx.params.get("skip_pending")),
            )
        except RefacexError as exc:
            raise ValueError(str(exc) + self._queued_note(ctx)) from None

    def _anonymize_runs(self, ctx, state):
        from fiftyone.operators.delegated import DelegatedOperationService

        uri = self.uri.rsplit("/", 1)[0] + "/anonymize_faces"
        return DelegatedOperationService().list_operations(operator=uri, dataset_name=ctx.dataset.name, run_state=state)

    def _wait_for_anonymization(self, ctx, view):
        """A delegated evaluate may start while an anonymize run on the same dataset is still
        running in another worker: wait for it rather than evaluate half-done samples."""
        from fiftyone.operators.executor import ExecutionRunState

        deadline = time.monotonic() + _WAIT_S
        while api.pending_count(view) and self._anonymize_runs(ctx, ExecutionRunState.RUNNING) and time.monotonic() < deadline:
            ctx.set_progress(progress=0.0, label="waiting for the running anonymize_faces to finish")
            time.sleep(5)

    def _queued_note(self, ctx):
        """A queued anonymize run cannot be waited for: this worker may be the one to run it next
        (FiftyOne's executor runs the newest queued operation first)."""
        from fiftyone.operators.executor import ExecutionRunState

        for state, what in ((ExecutionRunState.RUNNING, "running"), (ExecutionRunState.QUEUED, "queued")):
            if self._anonymize_runs(ctx, state):
                return f"; an anonymize_faces run on this dataset is still {what}: evaluate after it has finished"
        return ""


def _source_field(ctx, inputs=None):
    """The media field to read the anonymised media from: by default the one each sample's
    anonymise run wrote (remembered in its ``refacex.media_field``)."""
    if inputs is not None:
        inputs.str(
            "source_field",
            required=False,
            label="Anonymized media field",
            description="Default: where the anonymize run wrote it (filepath with target=replace, its media field with target=field)",
        )
    return ctx.params.get("source_field") or None


class ExtractPayloads(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="extract_payloads", label="refacex: extract payloads", dynamic=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _target(ctx, inputs)
        _source_field(ctx, inputs)
        return types.Property(inputs)

    def execute(self, ctx):
        try:
            return api.extract_sample_payloads(ctx.target_view(), _secret(ctx, "REFACEX_KEY_FILE"), source_field=_source_field(ctx))
        except RefacexError as exc:
            raise ValueError(str(exc)) from None


class RecoverFaces(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="recover_faces",
            label="refacex: recover faces (admin)",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        _target(ctx, inputs)
        vault_secret = _secret(ctx, "REFACEX_VAULT")
        inputs.str(
            "vault",
            default=vault_secret or "",
            required=not vault_secret,
            label="Vault: a file or a mongodb:// URI (default: the REFACEX_VAULT secret)",
        )
        inputs.enum("target", ["field", "replace"], default="field", label="Write to")
        inputs.str("media_field", default="recovered_filepath", label="Media field (target=field)")
        inputs.str("output_dir", required=False, label="Output folder (files keep their originals' names and layout)")
        _source_field(ctx, inputs)
        if not _secret(ctx, "REFACEX_KEY_FILE"):
            inputs.view("error", types.Error(label="Recovery needs the REFACEX_KEY_FILE secret"))
        return types.Property(inputs, view=types.View(label="Recover original faces"))

    def resolve_delegation(self, ctx):
        return _delegate(ctx)

    def execute(self, ctx):
        key = _secret(ctx, "REFACEX_KEY_FILE")
        if not key:
            raise ValueError("recovery needs the REFACEX_KEY_FILE secret")
        p = ctx.params
        vault = _vault(ctx)
        if not vault:
            raise ValueError("recovery needs a vault: the vault parameter or the REFACEX_VAULT secret")
        try:
            return api.recover_samples(
                ctx.target_view(),
                key,
                vault,
                output_dir=p.get("output_dir") or None,
                target=p.get("target", "field"),
                media_field=p.get("media_field") or "recovered_filepath",
                progress=_progress(ctx),
                source_field=_source_field(ctx),
            )
        except RefacexError as exc:
            raise ValueError(str(exc)) from None


def register(p):
    p.register(AnonymizeFaces)
    p.register(EvaluateAnonymization)
    p.register(ExtractPayloads)
    p.register(RecoverFaces)
