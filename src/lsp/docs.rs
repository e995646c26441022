//! What the language server says about names the user did not define:
//! built-in functions, keywords, solvers, backward modes, `with` options,
//! initializers and `train` keys.
//!
//! Owns the documentation text. The lists of names are read from the
//! compiler's own tables (`sema::builtins::BUILTINS`, `sema::options`), in
//! this one place, so the server offers exactly what the checker accepts;
//! tests check that every name has a text and every text a name.

use crate::sema::options::{self, ArgInfo};

/// The grammar's reserved words (see [`crate::syntax::KEYWORDS`]).
pub use crate::syntax::KEYWORDS;

fn lookup(table: &[(&str, &'static str)], name: &str) -> Option<&'static str> {
    table.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// The built-in function names, as the checker knows them.
pub fn builtins() -> &'static [&'static str] {
    crate::sema::builtins::BUILTINS
}

/// Every built-in function: signature, then what it computes.
pub const BUILTIN_DOCS: &[(&str, &str)] = &[
    ("exp", "exp(x): e^x, elementwise"),
    ("log", "log(x): natural logarithm, elementwise"),
    ("sqrt", "sqrt(x): square root, elementwise"),
    ("abs", "abs(x): absolute value, elementwise"),
    ("tanh", "tanh(x): hyperbolic tangent, elementwise"),
    ("sigmoid", "sigmoid(x): 1 / (1 + e^-x), elementwise"),
    ("relu", "relu(x): max(x, 0), elementwise"),
    ("gelu", "gelu(x): Gaussian error linear unit (tanh form), elementwise"),
    ("softplus", "softplus(x): log(1 + e^x), elementwise"),
    ("sin", "sin(x): sine, elementwise"),
    ("cos", "cos(x): cosine, elementwise"),
    ("leaky_relu", "leaky_relu(x, slope = 0.01): x where x > 0, else slope * x"),
    ("maximum", "maximum(a, b): elementwise maximum, broadcasting"),
    ("minimum", "minimum(a, b): elementwise minimum, broadcasting"),
    ("where", "where(mask, a, b): a where mask is non-zero, else b"),
    ("clamp", "clamp(x, lo, hi): x limited to [lo, hi]"),
    ("sum", "sum(x, axis = all, keepdim = false): sum over axis (an int or a tuple)"),
    ("mean", "mean(x, axis = all, keepdim = false): mean over axis"),
    ("max", "max(x, axis = all, keepdim = false): maximum over axis"),
    ("min", "min(x, axis = all, keepdim = false): minimum over axis"),
    ("logsumexp", "logsumexp(x, axis = all, keepdim = false): log(sum(exp(x))), stably"),
    ("softmax", "softmax(x, axis = -1): normalized exponentials along axis"),
    ("log_softmax", "log_softmax(x, axis = -1): log of softmax, stably"),
    ("reshape", "reshape(x, [dims]): same elements, new shape (one dim may be -1)"),
    ("transpose", "transpose(x, a, b): swap axes a and b"),
    ("permute", "permute(x, [axes]): reorder the axes"),
    ("concat", "concat((a, b, ...), axis): join tensors along axis"),
    ("split", "split(x, axis, sizes): cut x along axis into parts of the given sizes"),
    ("unsqueeze", "unsqueeze(x, axis): insert a dimension of size 1"),
    ("squeeze", "squeeze(x, axis): remove a dimension of size 1"),
    ("broadcast", "broadcast(x, [dims]): expand x to the shape"),
    ("flatten", "flatten(x, start = 1): merge the dimensions from start on"),
    ("eye", "eye(n): the n x n identity matrix"),
    ("zeros", "zeros([dims]): a tensor of zeros"),
    ("ones", "ones([dims]): a tensor of ones"),
    ("arange", "arange(n): 0, 1, ..., n - 1"),
    ("conv1d", "conv1d(x, w, stride = 1, padding = 0, dilation = 1, groups = 1): x [B, C, L], w [C_out, C / groups, K]"),
    ("conv2d", "conv2d(x, w, stride = 1, padding = 0, dilation = 1, groups = 1): x [B, C, H, W], w [C_out, C / groups, K, K]"),
    ("avg_pool2d", "avg_pool2d(x, k, stride = k): average over k x k windows"),
    ("max_pool2d", "max_pool2d(x, k, stride = k): maximum over k x k windows"),
    ("upsample_nearest2d", "upsample_nearest2d(x, scale): repeat each pixel scale x scale times"),
    ("embedding", "embedding(ids, table): the rows of table [n, d] at the i64 ids"),
    ("dropout", "dropout(x, p): zero each element with probability p while training (one mask per solve inside an equilibrium)"),
    ("causal_mask", "causal_mask(T): [T, T] mask, 1 where a position may attend (j <= i)"),
    ("cast", "cast(x, dtype): x converted to another element type"),
    ("vjp", "vjp(f, x, v): the row vector v^T J_f(x) (x's type) of a fn, layer instance or built-in f; v has f(x)'s type; differentiable again"),
    ("jvp", "jvp(f, x, u): the product J_f(x) u (f(x)'s type); u has x's type; differentiable again"),
    ("probe", "probe(shape, kind = \"gaussian\"): random f32 probe vectors (\"gaussian\" or \"rademacher\"), fixed within a training step"),
    ("weight_norm", "weight_norm(w, axis): w * g / ||w|| per index of the output axis; adds the trained gain `<w>_g`, starting at ||w||"),
    ("normalize_weight", "normalize_weight(w, axis, norm, coeff = 1.0): w for norm = \"none\", else weight_norm or spectral_norm (norm = \"weight\" | \"spectral\")"),
    ("spectral_norm", "spectral_norm(w, axis, coeff = 1.0): w * coeff / sigma(w), sigma by one power iteration per training step on the state vector `<w>_u`"),
];

/// The text for `name`, if it is one.
pub fn builtin_doc(name: &str) -> Option<&'static str> {
    lookup(BUILTIN_DOCS, name)
}

/// Every solver of `with solver = ...`.
pub const SOLVER_DOCS: &[(&str, &str)] = &[
    ("fixed_point", "Damped fixed-point iteration z <- (1 - damping) z + damping f(z)."),
    ("anderson", "Anderson acceleration over the last m iterates, mixing beta, regularized by lam."),
    ("broyden", "Broyden's (good) quasi-Newton method with a low-rank inverse Jacobian of `memory` pairs."),
    ("unroll", "Exactly `steps` applications of the body from the initial value (an explicit weight-tied network)."),
];

/// The text for `name`, if it is one.
pub fn solver_doc(name: &str) -> Option<&'static str> {
    lookup(SOLVER_DOCS, name)
}

/// Every mode of `with backward = ...`.
pub const BACKWARD_DOCS: &[(&str, &str)] = &[
    ("implicit", "Implicit differentiation: solve the adjoint g = J^T g + dL/dz* with a root solver (by default the forward solver's kind)."),
    ("phantom", "Phantom gradient: backpropagate through `steps` damped body steps from z*."),
    ("jfb", "Jacobian-free backpropagation: one body step from z*, differentiated."),
    ("unrolled", "Backpropagate through the solver's own iterations (memory grows with them)."),
];

/// The text for `name`, if it is one.
pub fn backward_doc(name: &str) -> Option<&'static str> {
    lookup(BACKWARD_DOCS, name)
}

/// Every option of an `equilibrium`'s `with` clause.
pub const EQ_OPTION_DOCS: &[(&str, &str)] = &[
    (
        "solver",
        "The forward solver: fixed_point, anderson, broyden or unroll (default: anderson).",
    ),
    (
        "backward",
        "How gradients pass the equilibrium: implicit, phantom, jfb or unrolled.",
    ),
    (
        "init",
        "The initial value of the state: `zeros` (default) or a tensor of the state's type.",
    ),
];

/// The text for `name`, if it is one.
pub fn eq_option_doc(name: &str) -> Option<&'static str> {
    lookup(EQ_OPTION_DOCS, name)
}

/// Every `param` initializer.
pub const INIT_DOCS: &[(&str, &str)] = &[
    ("zeros", "zeros: every element 0"),
    ("ones", "ones: every element 1"),
    ("normal", "normal(std = 1.0): Gaussian samples"),
    ("uniform", "uniform(lo, hi): uniform samples in [lo, hi)"),
    (
        "kaiming_uniform",
        "kaiming_uniform(fan_in, a = sqrt(5)): PyTorch's default for linear and conv weights",
    ),
    (
        "xavier_uniform",
        "xavier_uniform(fan_in, fan_out): Glorot's uniform initialization",
    ),
    (
        "orthogonal",
        "orthogonal(gain = 1.0): a (scaled) orthogonal matrix",
    ),
    ("eye", "eye: the identity matrix"),
];

/// The text for `name`, if it is one.
pub fn init_doc(name: &str) -> Option<&'static str> {
    lookup(INIT_DOCS, name)
}

/// Every key of a `train` block.
pub const TRAIN_KEY_DOCS: &[(&str, &str)] = &[
    (
        "data",
        "The data source: mnist(path, ...), text(path, ...) or csv(path, target = ...); mnist and csv take classes = [..] and per_class = n for a labelled subset. Required.",
    ),
    (
        "loss",
        "The loss: cross_entropy (label_smoothing = e), nll (on log-probabilities), bce_with_logits, mse, or the name of a fn(scores, target) of the file returning a float scalar. Required.",
    ),
    (
        "optimizer",
        "sgd(lr, ...), adam(lr, ...) or adamw(...); default adam(lr = 1e-3).",
    ),
    (
        "schedule",
        "Learning-rate schedule: constant, cosine, linear, step(every, gamma), exponential(gamma) or onecycle(max_lr); each takes `warmup = steps` (default constant).",
    ),
    ("epochs", "Passes over the training data (default 1)."),
    ("batch_size", "Samples per step (default 64)."),
    (
        "seed",
        "Seed of initial values, shuffles and probes (default 0).",
    ),
    (
        "jacobian_reg",
        "jacobian(weight = w, freq = p): Jacobian regularization of every equilibrium.",
    ),
    ("clip_grad", "Largest global gradient norm (default: off)."),
    (
        "threads",
        "CPU threads of the run (default: RAYON_NUM_THREADS, else one per core); `--threads` overrides.",
    ),
    (
        "freeze",
        "Parameters (paths or path prefixes) that training leaves unchanged, e.g. [inject, \"cell.w\"]; their gradients are not computed.",
    ),
    (
        "adversarial",
        "pgd(eps, steps = 10, alpha = 2.5 * eps / steps, norm = \"linf\") or fgsm(eps, norm): train each step on its batch attacked against the current parameters (eps in the data's units); metrics record clean_loss and adversarial_loss.",
    ),
    (
        "valid",
        "Fraction of the train split held out for validation, drawn from the seed, e.g. 0.1 (mnist, csv; text uses its *.valid.txt).",
    ),
    (
        "eval_every",
        "Also validate every N steps (default: after each epoch only).",
    ),
    (
        "eval_samples",
        "Validate on the first N validation samples (default: all).",
    ),
    (
        "early_stopping",
        "patience(epochs = 3, metric = \"loss\"|\"accuracy\"|\"perplexity\"): stop when the validation metric has not improved for that many epochs; best.safetensors keeps the best parameters.",
    ),
    (
        "pretrain",
        "unrolled(steps = N, depth = K): train K unrolled weight-tied iterations in place of each equilibrium for the first N steps, then the DEQ.",
    ),
    (
        "eval_solver",
        "The forward solver of every equilibrium when evaluating (validation, test, deqc eval), e.g. anderson(max_iter = 60).",
    ),
    (
        "outputs",
        "The role of each model output, e.g. [scores, log_density]: accuracy and cross-entropy of class scores, nll and bits per dimension of a log-density (`scores`, `log_density`, `other`).",
    ),
];

/// Every schedule of `schedule = ...`; each also takes `warmup = steps`, a
/// linear ramp from 0 over the first steps.
pub const SCHEDULE_DOCS: &[(&str, &str)] = &[
    ("constant", "constant(warmup = 0): the optimizer's lr throughout"),
    (
        "cosine",
        "cosine(warmup = 0): lr * (1 + cos(pi * p)) / 2 over the steps after the warm-up (p from 0 to 1)",
    ),
    ("linear", "linear(warmup = 0): lr * (1 - p), down to 0 at the end of the run"),
    ("step", "step(every, gamma = 0.1, warmup = 0): lr * gamma^(epoch / every)"),
    ("exponential", "exponential(gamma, warmup = 0): lr * gamma^epoch"),
    (
        "onecycle",
        "onecycle(max_lr, warmup = 30% of the steps): up from lr to max_lr over the warm-up, then down to lr / 1e4, along cosines (PyTorch's OneCycleLR when lr = max_lr / 25)",
    ),
];

/// The text for `name`, if it is one.
pub fn schedule_doc(name: &str) -> Option<&'static str> {
    lookup(SCHEDULE_DOCS, name)
}

/// The text for `name`, if it is one.
pub fn train_key_doc(name: &str) -> Option<&'static str> {
    lookup(TRAIN_KEY_DOCS, name)
}

/// Every `with` option, solver, backward mode and `train` key, for completion.
pub fn eq_options() -> &'static [&'static str] {
    options::EQ_OPTIONS
}
pub fn solvers() -> &'static [&'static str] {
    options::SOLVERS
}
pub fn backward_modes() -> &'static [&'static str] {
    options::BACKWARD_MODES
}
pub fn inits() -> &'static [&'static str] {
    options::INITS
}
pub fn train_keys() -> &'static [&'static str] {
    options::TRAIN_KEYS
}
pub fn schedules() -> &'static [&'static str] {
    options::SCHEDULES
}

/// The arguments of a solver or backward mode called `name`.
pub fn setting_args(name: &str) -> Option<Vec<ArgInfo>> {
    options::solver_args(name).or_else(|| options::backward_args(name))
}

/// `name(a = 5, b = 1.0, c)` with defaults, for hover.
pub fn setting_signature(name: &str) -> Option<String> {
    let args = setting_args(name)?;
    let parts: Vec<String> = args
        .iter()
        .map(|a| match &a.default {
            Some(d) => format!("{} = {d}", a.name),
            None => a.name.to_string(),
        })
        .collect();
    Some(format!("{name}({})", parts.join(", ")))
}

/// Markdown hover text for a name that is not a user definition.
pub fn hover(name: &str) -> Option<String> {
    if let Some(d) = builtin_doc(name) {
        let (sig, text) = d.split_once(": ").unwrap_or((d, ""));
        return Some(format!("```deq\n{sig}\n```\nbuilt-in: {text}"));
    }
    if let Some(d) = solver_doc(name) {
        let sig = setting_signature(name).unwrap_or_else(|| name.to_string());
        return Some(format!("```deq\n{sig}\n```\nsolver: {d}"));
    }
    if let Some(d) = backward_doc(name) {
        let sig = setting_signature(name).unwrap_or_else(|| name.to_string());
        return Some(format!("```deq\n{sig}\n```\nbackward mode: {d}"));
    }
    if let Some(d) = init_doc(name) {
        return Some(format!("initializer: {d}"));
    }
    if let Some(d) = schedule_doc(name) {
        let (sig, text) = d.split_once(": ").unwrap_or((d, ""));
        return Some(format!("```deq\n{sig}\n```\nschedule: {text}"));
    }
    None
}

/// Hover text for a key: a `with` option or a `train` key.
pub fn key_hover(name: &str) -> Option<String> {
    eq_option_doc(name)
        .map(|d| format!("`with {name}`: {d}"))
        .or_else(|| train_key_doc(name).map(|d| format!("`train` key `{name}`: {d}")))
}

/// Hover text for the argument `arg` of the solver or backward mode `callee`.
pub fn argument_hover(callee: &str, arg: &str) -> Option<String> {
    let info = setting_args(callee)?.into_iter().find(|a| a.name == arg)?;
    let default = match info.default {
        Some(d) => format!("default {d}"),
        None => "required".into(),
    };
    Some(format!(
        "`{arg}` of `{callee}`: {} ({default})",
        info.expected
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(table: &[(&str, &str)]) -> BTreeSet<String> {
        table.iter().map(|(n, _)| n.to_string()).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn documented_names_are_exactly_the_checkers() {
        assert_eq!(names(BUILTIN_DOCS), set(builtins()));
        assert_eq!(names(SOLVER_DOCS), set(solvers()));
        assert_eq!(names(BACKWARD_DOCS), set(backward_modes()));
        assert_eq!(names(EQ_OPTION_DOCS), set(eq_options()));
        assert_eq!(names(INIT_DOCS), set(inits()));
        assert_eq!(names(TRAIN_KEY_DOCS), set(train_keys()));
        assert_eq!(names(SCHEDULE_DOCS), set(schedules()));
        for s in solvers() {
            assert!(options::solver_args(s).is_some(), "{s}");
        }
        for m in backward_modes() {
            assert!(options::backward_args(m).is_some(), "{m}");
        }
    }

    #[test]
    fn setting_signatures_come_from_the_checkers_schemas() {
        assert_eq!(
            setting_signature("anderson").as_deref(),
            Some("anderson(m = 5, beta = 1.0, lam = 0.0001, tol = 0.0001, max_iter = 40, stop = \"rel\")")
        );
        assert_eq!(
            setting_signature("unroll").as_deref(),
            Some("unroll(steps, tol = 0.0001, max_iter = 40, stop = \"rel\")")
        );
        assert_eq!(setting_signature("newton"), None);
        assert!(hover("conv2d").is_some_and(|h| h.starts_with("```deq\nconv2d(x, w, stride = 1")));
        assert_eq!(hover("no_such_builtin"), None);
        assert!(hover("onecycle").is_some_and(|h| h.contains("onecycle(max_lr, warmup")));
    }
}
