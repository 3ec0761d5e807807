"""Docstring fragments shared by the tools, filled in with :func:`scratio._docs.doc_params`."""

#: Options every tool takes (see :class:`~scratio.tl._runner.ToolOptions` for the defaults).
COMMON = """\
use_rep
    Key of the embedding in ``adata.obsm`` (e.g. ``"X_pca"``, ``"X_scVI"``).
n_pcs
    Use only the first ``n_pcs`` columns of ``use_rep`` (``None``: all). ``"auto"`` (the default
    of :func:`~scratio.tl.differential_abundance`) uses all of them when the smallest category the
    tool compares has at least 30 cells per column, and otherwise as many leading columns as it
    has 30 cells for, if the columns are ordered by variance as principal components are (else
    all, with a warning). Densities in fewer dimensions need fewer cells: on 700 PBMCs with
    random labels, the log-ratios' per-cell noise sd is 0.76 with all 50 PCs and 0.29 with 10;
    with a weak real effect, PR-AUC 0.74 and 0.84. Every tool warns when a category it compares
    has fewer than 30 cells per dimension.
key_added
    Name of the ``adata.obs`` column and ``adata.uns`` entry written.
model
    A trained :class:`~scratio.RatioFlow` to reuse instead of training one. It must have
    been trained on ``use_rep`` with the tool's condition keys registered, and know every
    category those ``adata.obs`` columns hold; other registered keys are marginalised.
n_steps
    Training steps of a new model; by default half the number of cells, between 400 and 3000
    (longer training on few cells memorises them).
batch_size
    Cells per training step.
solver
    ODE solver for scoring (a torchdiffeq method; fixed-step ones are reproducible per cell).
solver_steps
    Steps of a fixed-step solver from the cell (``t = 1``) to noise (``t = 0``).
divergence
    How the divergence of the learned velocity is taken: ``"exact"`` (the Jacobian trace, one
    network pass per dimension), ``"hutchinson"`` (one random probe, one pass; unbiased but
    noisy) or ``"auto"`` (default): over a closed-form ``base`` in more than 16 dimensions,
    Hutchinson's estimate with a probe per 16 dimensions, else exact. A base's own divergence is
    always exact, so the estimate then only concerns the network's small correction: with the
    differential abundance tool's mixture base on 20,000 cells it ranked semi-synthetic effects as
    the exact trace did (PR-AUC 0.999 and 0.98 in 20 and 50 PCs) in a third to a quarter of the
    time. Recorded as ``divergence_used`` (and ``n_probes_used``) in
    ``uns[key_added]["params"]["scoring"]``.
precision
    Arithmetic of the network in training and scoring: ``"32-true"`` (float32) or
    ``"bf16-mixed"`` (matrix products in bfloat16, weights and the ODE in float32): about twice
    as fast with nearly the same results on a CPU with bfloat16 matrix units (Intel AMX; recent
    GPUs have them too), slower on others. See "How it works", Arithmetic. A ``precision`` in
    ``train_kwargs`` sets training's apart.
accelerator, devices, strategy, num_nodes
    Where the cells are scored: by default in this process, on the model's device. Otherwise
    through Lightning's prediction loop, e.g. ``devices=4, strategy="ddp"``: every device scores
    a share of the cells, with the same numbers (see :class:`~scratio.core.ScoringDevices`).
    Training takes its own devices in ``train_kwargs``.
min_cells
    Fewest cells a category of a condition key may have.
train_kwargs
    Further options of :meth:`scratio.RatioFlow.train` (``lr``, ``p_drop``, ``accelerator``, ...),
    see :class:`~scratio.core.TrainingOptions`.
copy
    Return a copy with the results instead of writing into ``adata``.
overwrite
    Replace an ``adata.obs`` column or ``adata.uns`` entry named like the results that scratio
    did not write. Results of earlier scratio calls are replaced without it (with a log line).
random_state
    Seed of the network, of training and of any Hutchinson probes.
model_kwargs
    Options of :class:`~scratio.RatioFlow` (``scaling``, ``schedule``, ``s_min``, ``width``, ``n_layers``,
    ``base="gaussian"`` or ``"mixture"``, ...)."""

#: The start of every tool's Returns section.
RETURNS = """\
``None``, or the AnnData when ``copy=True``, with

``adata.obs[f"{key_added}_outside"]``
    ``bool``: whether each scored cell lies outside the training data, far less likely than
    every held-out cell (:class:`~scratio.Support`), so that its log-ratios extrapolate the
    model. By default under the unconditional density; the differential abundance tool judges by
    its own scoring pass when it chooses the bandwidth on held-out cells. ``params["outside"]``
    records how."""
