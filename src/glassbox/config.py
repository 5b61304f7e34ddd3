"""The recipe: one YAML file that says what a run does.

Every section is a pydantic model that forbids unknown keys, so a typo such
as ``epocs: 5`` is an error that names ``epochs`` rather than a silently
ignored setting. ``load_recipe`` layers, from weakest to strongest: the
built-in defaults, the chosen preset, the YAML file, then ``--set`` overrides.

>>> r = load_recipe(None, overrides=["data.source=iris", "preset=fast"])
>>> (r.data.source, r.train.epochs)
('iris', 10)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glassbox.errors import UserError, nearest


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# English accents of eSpeak NG (its language files); other languages speak the words with their rules.
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]


class AudioDataConfig(Section):
    """Audio sources: the generated ``spoken-digits`` (glassbox.data.audio) and ``audio:DIR`` (WAV files)."""

    words: list[str] = Field(default_factory=lambda: list(DIGIT_WORDS), min_length=2)  # the classes
    voices: int | None = Field(None, ge=3)  # eSpeak voice variants (speakers) used; None: all (~100)
    accents: list[str] = Field(default_factory=lambda: list(ACCENTS), min_length=1)
    takes: int = Field(3, ge=1)  # clips per voice and word, each its own accent, rate and pitch
    rate: tuple[int, int] = (130, 230)  # speaking rate drawn per clip, words per minute
    pitch: tuple[int, int] = (25, 75)  # eSpeak pitch (0-99) drawn per clip
    seconds: float = Field(0.8, gt=0, le=30)  # clip length; longer words are cut, shorter padded
    # Background noise mixed into every clip at this signal-to-noise ratio (dB); None: clean.
    snr: float | None = None
    reverb: float = Field(0.0, ge=0, le=3)  # room reverberation time RT60 in seconds; 0: dry
    seed: int = 0  # the data set's own seed, apart from the recipe's: every run hears the same clips
    # audio:DIR: resample files that are not at 16 kHz (false: refuse them).
    resample: bool = True


class DataConfig(Section):
    # A registered name (see `glassbox datasets`) or csv:PATH, images:DIR, text:PATH, audio:DIR.
    source: str = "breast-cancer"
    label: str | None = None  # label column of a CSV; its last column when unset
    sensitive: str | None = None  # column held out of the features as the group for audits
    impute: Literal["none", "mean", "median"] = "none"  # none: NaN or inf is an error
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    label_noise: float = Field(0.0, ge=0, lt=1)  # fraction of training labels flipped, recorded
    seq_len: int = Field(128, ge=2)  # bytes per window for text
    max_bytes: int = Field(2_000_000, ge=1000)  # cap on a text corpus; the stdlib is ~40 MB
    image_size: int | None = Field(None, ge=4)  # images are resized to a square; None: first image's size
    # Share of the training rows whose labels the supervised stage may use
    # (seeded, stratified, at least one per class); the rest stay in the data
    # for pretraining only. 1.0: every label. For few-label experiments.
    label_fraction: float = Field(1.0, gt=0, le=1)
    audio: AudioDataConfig = AudioDataConfig()


class AudioModelConfig(Section):
    """The audio tokenizer (glassbox.nn.audio): log-mel features, spectrogram patches, SpecAugment."""

    n_fft: int = Field(400, ge=16)  # 25 ms windows at 16 kHz
    hop: int = Field(160, ge=1)  # 10 ms between frames
    n_mels: int = Field(32, ge=2)
    f_min: float = Field(20.0, ge=0)
    f_max: float | None = Field(None, gt=0)  # None: half the sample rate
    patch_mels: int = Field(8, ge=1)  # a token covers patch_mels mel bands x patch_frames frames
    patch_frames: int = Field(8, ge=1)
    # SpecAugment (Park et al., 2019) while training: masks of up to *_width bands or frames.
    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(6, ge=0)
    time_masks: int = Field(2, ge=0)
    time_width: int = Field(10, ge=0)


class ModelConfig(Section):
    dim: int = Field(64, ge=8)
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # A registered kind (glassbox.nn.attention.KINDS). auto: softmax below the
    # measured crossover length, linear above it, decided once per model from
    # its sequence length (tables and small images always get softmax).
    attention: str = "auto"
    # Options of the efficient kinds; each kind reads only its own (KindSpec.options).
    window: int = Field(256, ge=1)  # sliding: how many past (or, bidirectional, nearby) keys a query sees
    chunk_size: int = Field(64, ge=1)  # linear, gla, deltanet: chunk length of the training form
    feature_map: Literal["elu", "taylor"] = "elu"  # linear: elu+1, or Based's 2nd-order Taylor of exp
    patch: int = Field(2, ge=1)  # image patch side; digits are 8 x 8, so 2 gives 16 tokens
    conv_stem: bool = False  # a small convolution before patching (the hybrid)
    max_len: int = Field(512, ge=1)  # longest byte sequence the positional table covers
    # Token merging (ToMe): tokens merged away in each block of a tabular or
    # image encoder, trading a little accuracy for speed; 0 = off. Causal
    # (text, sequence) models cannot merge. Changeable after training:
    # Transformer.set_merge(r).
    merge_r: int = Field(0, ge=0)
    # Classifier head on the CLS features (classification only; text and sequence models keep linear):
    # linear: one Linear layer; quantum: glassbox.nn.quantum.QuantumHead, a simulated
    # variational circuit (needs the quantum extra, PennyLane); classical_small:
    # ClassicalHead, the same shape with a small MLP in place of the circuit, its baseline.
    head: Literal["linear", "quantum", "classical_small"] = "linear"
    qubits: int = Field(4, ge=1, le=12)  # quantum, classical_small: width; simulation cost is 2**qubits
    quantum_layers: int = Field(2, ge=1)  # quantum: entangling layers; classical_small: MLP sized to match
    # Tables only: also map the standardized features straight to the logits with one Linear
    # layer, added to the head's output (wide and deep, Cheng et al. 2016). The model then
    # contains logistic regression, which small, nearly linear tables favour. Zero-initialized,
    # so training starts from the plain transformer. Attention rollouts do not see this path.
    linear_path: bool = False
    # With linear_path: lam * mean(transformer logits ** 2) per row added to the training loss,
    # so the transformer stays a small correction to the linear path unless the data pay for more
    # (a penalty in function space, not on weights). On tables of a hundred rows the transformer
    # otherwise moves the model off logistic regression's solution (docs/DEFAULTS.md, fifth pass).
    # Without linear_path it does nothing (the table defaults set both; linear_path=false alone
    # gives the plain transformer as before).
    deep_penalty: float = Field(0.0, ge=0)
    audio: AudioModelConfig = AudioModelConfig()


class TrainConfig(Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)  # rows per optimizer step, however many micro-batches
    # Micro-batches per step (gradient accumulation): the same gradient as one
    # batch of batch_size, in a fraction of the memory.
    accumulate: int = Field(1, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only
    warmup: float = Field(0.05, ge=0, lt=1)  # fraction of all steps spent warming up
    schedule: Literal["cosine", "constant"] = "cosine"
    # balanced: weigh each class by n / (K * count), so rare classes (fraud)
    # are not ignored; reported losses stay unweighted.
    class_weight: Literal["none", "balanced"] = "none"
    grad_clip: float | None = Field(1.0, gt=0)  # max gradient norm; None turns clipping off
    # Early stopping and best-weights metric: auto is val_accuracy for
    # classification and val_loss for language models.
    monitor: str = "auto"
    patience: int | None = Field(10, ge=1)  # epochs without improvement; None: never stop early
    checkpoint_every: int = Field(0, ge=0)  # steps between checkpoints; 0: at each epoch end
    threads: int | None = Field(None, ge=1)  # torch threads; None: torch's default
    max_steps_per_epoch: int | None = Field(None, ge=1)  # caps epochs of very large data (text)
    # Linear probe: train only the classifier head on a frozen encoder (kept in
    # eval mode, so no dropout); false fine-tunes everything.
    head_only: bool = False
    # Classification: the training loss's target puts 1 - eps on the label and eps / K on
    # every class (Szegedy et al. 2016); validation and test losses stay plain cross-entropy.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # auto: each training batch of images is randomly cropped (85-100 % of the area), rotated
    # (up to 10 degrees) and shifted, seeded by step (glassbox.ssl.views.image_view); other
    # kinds are never warped. Off by default: on digits it lowered validation accuracy with the
    # conv stem (0.9907 vs 0.9926, docs/DEFAULTS.md); 8 x 8 digits leave little to warp.
    augment: Literal["auto", "none"] = "none"


class ValuationConfig(Section):
    """Data valuation: which training examples help, which hurt (values.csv and a report section)."""

    # inrun: In-run Data Shapley during training (glassbox.valuation.inrun);
    # knn_shapley: exact KNN-Shapley on the standardized inputs, no gradients; none: off.
    method: Literal["none", "inrun", "knn_shapley"] = "none"
    order: Literal[1, 2] = 1  # inrun: 2 adds the Hessian term (one more backward on the validation rows)
    # inrun: validation rows per step, rotating through the validation split.
    # Each costs a row of forward and backward, so keep it well below train.batch_size.
    val_batch: int = Field(8, ge=1)
    # Ghost dot products (Gram matrices instead of per-example gradients): auto
    # follows the paper's 2 T T' < d_in d_out rule per layer where they apply (SGD, order 1).
    ghost: Literal["auto", "never", "always"] = "auto"
    # Computed beside the main method in the same run, each into values_<name>.csv:
    # knn_shapley, tracin (TracIn-CP via Captum over epoch checkpoints, the explain
    # extra), loo (leave-one-out with logistic regression; at most 200 training rows).
    baselines: list[Literal["knn_shapley", "tracin", "loo"]] = Field(default_factory=list)
    knn_k: int = Field(5, ge=1)  # neighbours for KNN-Shapley
    tracin_checkpoints: int = Field(5, ge=1)  # TracIn: checkpoints kept, evenly spaced over the epochs


ExplainMethod = Literal["integrated_gradients", "deeplift", "kernel_shap", "rollout", "grad_rollout"]


class SensitivityConfig(Section):
    """Average sensitivity of the model (glassbox.audit.sensitivity): at the end and during training."""

    rows: int = Field(
        500, ge=1
    )  # test rows (a seeded sample) of the final measurement; each costs n forwards
    probes: int = Field(64, ge=1)  # training rows measured at every `every`-th epoch end (the curve)
    every: int = Field(1, ge=1)
    patch: int = Field(2, ge=1)  # images: side of the square one perturbation replaces
    draws: int = Field(1, ge=1)  # real-valued data: replacement draws per row and position


class TuneConfig(Section):
    """Hyperparameter search with Optuna before training (glassbox.tune); ``preset: best`` turns it on."""

    trials: int = Field(40, ge=1)  # trial budget
    timeout: float = Field(600.0, gt=0)  # time budget in seconds; the search stops at whichever comes first
    folds: int = Field(3, ge=2)  # stratified folds of the training split; the test split is never used
    epochs: int = Field(30, ge=1)  # most epochs a trial trains per fold
    patience: int = Field(5, ge=1)  # a trial's early stopping on its held-out fold


class PretrainConfig(Section):
    """Self-supervised pretraining of the encoder before supervised training (glassbox.ssl)."""

    # contrastive: NT-Xent with a projection head (SCARF views for tables, SimCLR
    # augmentations for images, crops and span masks for text, speed/shift/noise and
    # SpecAugment for audio); vicreg: VICReg on the same views; masked: VIME for tables,
    # MAE for images and for audio spectrogram patches, masked bytes for text.
    method: Literal["contrastive", "vicreg", "masked"] = "contrastive"
    epochs: int = Field(150, ge=1)
    batch_size: int = Field(256, ge=2)  # contrastive: every other row of the batch is a negative
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # Which training rows pretraining reads, labels set aside: all of them, or a
    # seeded fraction. Validation and test rows are never used.
    unlabeled: Literal["all"] | Annotated[float, Field(gt=0, le=1)] = "all"
    # contrastive: 0.5 is SimCLR's choice for small batches; on digits 0.1 and 0.2
    # gave 1-shot probes 10-15 points worse than 0.5 (see docs/BENCHMARKS.md).
    temperature: float = Field(0.5, gt=0)
    proj_dim: int = Field(128, ge=2)  # contrastive: width of the projection head's output
    corruption: float = Field(0.6, gt=0, lt=1)  # tables: SCARF's share of features replaced (its default)
    # images: smallest crop, as a share of the area; at 0.7 a pixel SVM trained on clean
    # digits fell below 90 % on the views, at 0.8 it stays above (tests/ssl/test_views.py).
    crop_scale: float = Field(0.8, gt=0, le=1)
    rotation: float = Field(12.0, ge=0, le=180)  # images: largest rotation, degrees
    translate: float = Field(0.0, ge=0, lt=1)  # images: extra shift beyond the crop's, share of the side
    noise: float = Field(0.05, ge=0)  # images: Gaussian noise std, as a share of each image's range
    text_crop: float = Field(0.8, gt=0, le=1)  # text: share of each window a view keeps
    # masked: share hidden; None: by kind (tables 0.3 as VIME, images and audio 0.5, text 0.15 as BERT).
    # Also the span-mask share of text views.
    mask_ratio: float | None = Field(None, gt=0, lt=1)
    # audio views: speed change up to +-speed (pitch and tempo together), a shift of up to
    # shift seconds, and background noise at an SNR drawn from view_snr to view_snr + 20 dB.
    speed: float = Field(0.1, ge=0, lt=0.5)
    shift: float = Field(0.1, ge=0)
    view_snr: float = 10.0


class ExplainConfig(Section):
    """Explanations of test predictions with their quality checks (glassbox.explain); on when present."""

    # None: by data kind (tables: all five; images: all but kernel_shap, which
    # would need thousands of model calls per image for 64 pixels).
    methods: list[ExplainMethod] | None = None
    rows: list[int] | None = None  # positions in the test split; None: a seeded sample
    sample: int = Field(50, ge=1)  # rows explained when rows is unset
    # Integrated Gradients doubles its Gauss-Legendre steps from 32 until the
    # worst row's |sum of attributions - (F(x) - F(baseline))| is below this.
    completeness_tol: float = Field(0.05, gt=0)
    max_steps: int = Field(1024, ge=8)
    kernel_shap_samples: int = Field(200, ge=10)  # coalitions per row


class AuditConfig(Section):
    """Fairness audit of test predictions by a group (glassbox.audit); on when present."""

    # The group column: data.sensitive's held-out column (the fraud source's
    # "group"), or a feature (one-hot "col=value" features are read back as col).
    # None: the data's sensitive column.
    sensitive: str | None = None
    threshold: float = Field(0.5, gt=0, lt=1)  # score above which a row is flagged positive
    positive: str | None = None  # the positive class; None: the second class (e.g. "fraud")
    n_boot: int = Field(1000, ge=50)  # bootstrap resamples for the confidence intervals
    # What the mitigation maximizes under its fairness constraint. balanced_accuracy:
    # with rare positives, plain accuracy is maximized by flagging nobody at all.
    objective: Literal["accuracy", "balanced_accuracy"] = "balanced_accuracy"


class ReportConfig(Section):
    enabled: bool = True
    title: str | None = None  # defaults to the recipe name
    intended_use: str | None = None  # the model card's first statement; None says none was given
    limitations: list[str] = Field(default_factory=list)  # added to those the card finds itself
    # Train logistic regression and gradient boosting (tables) or logistic regression and an RBF
    # SVC (images) on the same split and put them beside the model, first in the report and in
    # the card. Ignored for text and sequence runs.
    baselines: bool = True


class PartitionConfig(Section):
    """How the training rows are split among the clients (glassbox.data.partition)."""

    scheme: Literal["iid", "dirichlet", "classes", "column"] = "dirichlet"
    alpha: float = Field(0.3, gt=0)  # dirichlet: lower is more skewed; 0.1 gives one or two classes a client
    classes_per_client: int = Field(2, ge=1)  # classes: McMahan et al.'s pathological shards
    column: str | None = None  # column: one client per value (a branch, a hospital); clients = their count
    min_size: int = Field(10, ge=2)  # rows a client must hold; dirichlet redraws until all do
    local_val: float = Field(0.2, ge=0, lt=1)  # share of each client's rows kept for its own evaluation


class PrivacyConfig(Section):
    """Differential privacy: central (Flower's DP wrapper, RDP accountant) or local (Opacus DP-SGD)."""

    mode: Literal["central", "local"] = "central"
    noise_multiplier: float = Field(1.0, gt=0)  # sigma; central: of the clipped update, local: of each step
    clipping_norm: float = Field(1.0, gt=0)  # central: L2 bound on each client's update (model minus global)
    max_grad_norm: float = Field(1.0, gt=0)  # local: L2 bound on each example's gradient
    delta: float = Field(1e-5, gt=0, lt=1)  # epsilon is reported at this delta after every round


class FaultConfig(Section):
    """Fault drills: clients (partition ids) made to misbehave every round, to test the guards."""

    fail: list[int] = Field(default_factory=list)  # raise inside the ClientApp
    nan: list[int] = Field(default_factory=list)  # send an update full of NaN
    wrong_shape: list[int] = Field(default_factory=list)  # send a tensor of the wrong shape
    scale: list[int] = Field(default_factory=list)  # send the update times 100 (a crude poisoning)


class FederatedConfig(Section):
    """``glassbox federate``: Flower strategies over glassbox's Trainer, one client per partition."""

    strategy: Literal["fedavg", "fedadam", "fedprox", "scaffold", "krum", "multikrum", "trimmed_mean"] = (
        "fedavg"
    )
    clients: int = Field(10, ge=2)  # partitions, one SuperNode each; scheme column sets its own
    rounds: int = Field(20, ge=1)
    local_epochs: int = Field(1, ge=1)  # passes over a client's rows per round (train.epochs is ignored)
    fraction: float = Field(1.0, gt=0, le=1)  # clients sampled per round
    min_clients: int = Field(2, ge=1)  # a round with fewer accepted updates keeps the old model
    proximal_mu: float = Field(0.01, ge=0)  # fedprox: weight of (mu/2)||w - w_global||^2
    server_lr: float = Field(1.0, gt=0)  # scaffold: eta_g; fedadam: eta (Flower's default is 0.1)
    byzantine: int = Field(1, ge=0)  # krum, multikrum: f, the attackers tolerated
    trim_beta: float = Field(0.2, gt=0, lt=0.5)  # trimmed_mean: fraction cut at each end per coordinate
    timeout: float = Field(600.0, gt=0)  # seconds a round waits for replies; late clients are dropped
    partition: PartitionConfig = PartitionConfig()
    privacy: PrivacyConfig | None = None  # `privacy: {}` turns central DP on with the defaults
    faults: FaultConfig = FaultConfig()


class DistillConfig(Section):
    """Train toward a saved LM's next-token distributions (glassbox.train.distill), as a draft its target."""

    teacher: str  # run folder of the teacher, holding model.json and model.safetensors
    # Share of the loss that is the KL to the teacher (the rest: cross-entropy on the data). 1.0: a
    # speculative draft is judged only by agreement with its target (DistillSpec's setting).
    weight: float = Field(1.0, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)  # both distributions are softened by it; tau^2 rescales the loss


class DynamicsConfig(Section):
    """Learning dynamics (glassbox.audit.dynamics): predicted vs actual change on a fixed probe set."""

    probes: int = Field(16, ge=1)  # training rows (a seeded sample) whose log-probabilities are followed
    every: int = Field(1, ge=1)  # track every n-th optimizer step; each costs two probe forwards and a JVP
    # LM runs: after training, this many DPO steps on a copy of the model (sampled chosen/rejected
    # pairs on test prompts) to show the squeezing effect; 0 skips it. The saved model is untouched.
    dpo_steps: int = Field(0, ge=0)


class Recipe(Section):
    name: str = "run"
    preset: Literal["fast", "default", "best"] = "default"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    valuation: ValuationConfig = ValuationConfig()
    explain: ExplainConfig | None = None  # `explain: {}` turns explanations on with the defaults
    audit: AuditConfig | None = None  # `audit: {}` audits by the data's sensitive column
    federated: FederatedConfig | None = None  # read by `glassbox federate`; `train` ignores it
    dynamics: DynamicsConfig | None = None  # `dynamics: {}` tracks how each step moves the probes
    pretrain: PretrainConfig | None = None  # `pretrain: {}` pretrains the encoder before training
    tune: TuneConfig | None = None  # `tune: {}` searches model and training settings first
    sensitivity: SensitivityConfig | None = None  # `sensitivity: {}` measures the model's average sensitivity
    distill: DistillConfig | None = None  # `distill: {teacher: runs/<lm>}` trains toward that LM
    report: ReportConfig = ReportConfig()


# Defaults of the tabular and the image model, chosen by the validation-only
# search of benchmarks/defaults_search.py; docs/DEFAULTS.md holds the evidence.
# They sit under the preset and the recipe.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "tabular": {
        # linear_path: cross-validated accuracy 0.957 -> 0.967; with it, dropout 0.2 -> 0.0 tied on
        # accuracy and lowered the log loss (docs/DEFAULTS.md, "Tables, again")
        # deep_penalty 1: cross-validated errors 33 -> 22 of 852 wine rows (seeds 0-5) and 44 -> 35 of
        # 1,365 breast-cancer rows (seeds 0-2); logistic regression makes 20 and 38 (fifth pass)
        "model": {"dim": 128, "depth": 2, "dropout": 0.0, "linear_path": True, "deep_penalty": 1.0},
        "train": {
            "epochs": 100,
            "patience": 25,
            "monitor": "val_loss",  # 85 validation rows make accuracy a coarse signal; loss is smoother
            "batch_size": 32,
            "lr": 2e-3,
            "weight_decay": 0.01,
        },
    },
    "image": {
        "model": {"conv_stem": True, "patch": 1},  # validation accuracy 0.915 -> 0.993 on digits
    },
}

# Presets trade time for quality. They sit under the user's recipe: any key
# the recipe sets wins.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"model": {"dim": 32, "depth": 1}, "train": {"epochs": 10}},
    "default": {},
    # best: an Optuna search (glassbox.tune) chooses model and training settings, then the run
    # trains with them for up to 80 epochs.
    "best": {"tune": {}, "train": {"epochs": 80, "patience": 20}},
}


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (``4``, ``true``, ``[1,2]``)."""
    if "=" not in assignment:
        raise UserError(f"--set '{assignment}' needs the form key=value, e.g. --set model.depth=4")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (for nearest-key hints)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        # Optional sections (``ExplainConfig | None``) own their keys too.
        ann = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type)), ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def validation_error(err: ValidationError, where: str) -> UserError:
    """One line for the first problem pydantic found, naming the fix."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    dotted = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        options = list(owner.model_fields) if owner else []
        close = nearest(str(loc[-1]), options)
        hint = (
            f"did you mean '{'.'.join([*map(str, loc[:-1]), close])}'?"
            if close
            else ("valid keys here: " + ", ".join(options))
        )
        return UserError(f"{where}: unknown recipe key '{dotted}': {hint}")
    got = e.get("input")
    got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
    return UserError(
        f"{where}: {dotted}: {e['msg']}{got_s}; fix the value in the recipe or with --set {dotted}=..."
    )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"recipe not found: {path}; give the path to a YAML recipe, e.g. recipes/healthcare.yaml"
        )
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the path to a YAML recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: YAML syntax error{at}: {problem}; fix the recipe file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; give a YAML recipe") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a recipe is a mapping of sections (data:, model:, train:), not a {type(data).__name__}"
        )
    return data


def source_kind(source: str) -> str | None:
    """The kind of data a ``data.source`` names (tabular, image, text, audio), without loading it."""
    prefixes = {"csv": "tabular", "images": "image", "text": "text", "audio": "audio"}
    if ":" in source:
        return prefixes.get(source.split(":", 1)[0])
    from glassbox.data.sources import SOURCE_INFO

    return SOURCE_INFO.get(source, {}).get("kind")


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read, layer and validate a recipe. Raises UserError with one line on any problem.

    Layers, bottom to top: the built-in defaults, the defaults of the data's
    kind (``KIND_DEFAULTS``), the preset, the YAML file, then ``--set``.
    """
    user = read_yaml(path) if path is not None else {}
    for assignment in overrides or []:
        _set(user, assignment)
    preset = user.get("preset", "default")
    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    data = user.get("data")
    source = data.get("source", DataConfig().source) if isinstance(data, dict) else DataConfig().source
    kind = source_kind(source) if isinstance(source, str) else None  # a bad source fails validation below
    tree = _merge(_merge(KIND_DEFAULTS.get(kind or "", {}), PRESETS[preset]), user)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise validation_error(err, str(path) if path else "recipe") from None


def render(recipe: Recipe) -> str:
    """The recipe as YAML with every default filled in (what ``config.yaml`` holds)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def load_recipe_text(text: str) -> Recipe:
    """A recipe from its rendered YAML (``render``'s output: every field set, so no preset applies)."""
    try:
        return Recipe.model_validate(yaml.safe_load(text) or {})
    except ValidationError as err:
        raise validation_error(err, "recipe") from None
