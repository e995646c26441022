//! The example programs of LANGUAGE.md, verbatim (shared by the syntax tests).

pub const MNIST_MLP: &str = r#"// examples/mnist_mlp.deq — a deep equilibrium classifier for MNIST.
use nn;

model DeqMlp(x: [B, 784]) -> [B, 10] {
    let inject = nn::Linear[784, 256];
    let cell   = nn::Linear[256, 256];
    let head   = nn::Linear[256, 10];

    let u = inject(x);
    equilibrium z: [B, 256] = tanh(cell(z) + u)
        with solver   = anderson(m = 5, tol = 1e-4, max_iter = 40),
             backward = implicit(tol = 1e-6, max_iter = 40);
    head(z)
}

train DeqMlp {
    data       = mnist("data/mnist-10k", flatten = true, normalize = true);
    loss       = cross_entropy;
    optimizer  = adam(lr = 1e-3);
    epochs     = 4;
    batch_size = 128;
}
"#;

/// Section 6, verbatim; [`eq_snippet_in_model`] wraps it in a model.
pub const EQ_SNIPPET: &str = r#"equilibrium z: [B, H] = f(z, u)
    with solver   = anderson(m = 5, tol = 1e-4, max_iter = 40),
         backward = implicit(tol = 1e-6, max_iter = 40),
         init     = zeros;
"#;

pub const MDEQ: &str = r#"// A multiscale equilibrium (MDEQ-style): two resolutions solved jointly.
use nn;

model Mdeq(x: [B, 1, 28, 28]) -> [B, 10] {
    let stem  = nn::Conv2d[1, 8, 3, padding = 1];
    let n0    = nn::GroupNorm[4, 8];
    let hi    = nn::Conv2d[8, 8, 3, padding = 1];
    let lo    = nn::Conv2d[16, 16, 3, padding = 1];
    let down  = nn::Conv2d[8, 16, 3, stride = 2, padding = 1];
    let up    = nn::Conv2d[16, 8, 1];
    let n1    = nn::GroupNorm[4, 8];
    let n2    = nn::GroupNorm[4, 16];
    let head  = nn::Linear[16 * 7 * 7, 10];

    let u = n0(stem(x));
    equilibrium (h: [B, 8, 28, 28], l: [B, 16, 14, 14]) = (
        relu(n1(hi(h)) + u + upsample_nearest2d(up(l), 2)),
        relu(n2(lo(l)) + down(h))
    ) with solver = broyden(tol = 1e-3, max_iter = 12),
           backward = implicit(max_iter = 14);
    head(flatten(avg_pool2d(l, 2, 2), start = 1))
}

train Mdeq {
    data = mnist("data/mnist-10k");
    loss = cross_entropy;
    optimizer = adam(lr = 2e-3);
    schedule = cosine(warmup = 50);
    epochs = 3;
    batch_size = 64;
    jacobian_reg = jacobian(weight = 0.5, freq = 0.5);
}
"#;

pub const CHAR_LM: &str = r#"// A DEQ language model over characters: one weight-tied attention block.
use nn;

const D = 128;
const V = 64;

layer Block[d: int, heads: int](z: [B, T, d], u: [B, T, d]) -> [B, T, d] {
    let attn = nn::MultiHeadAttention[d, heads, causal = true];
    let ff   = nn::Mlp[d, 4 * d, d];
    let ln1  = nn::LayerNorm[d];
    let ln2  = nn::LayerNorm[d];
    let h = ln1(z + u + attn(z + u));
    ln2(h + ff(h))
}

model CharDeq(x: i64[B, T]) -> [B, T, V] {
    let embed = nn::Embedding[V, D];
    let block = Block[D, 4];
    let out   = nn::Linear[D, V];
    let u = embed(x);
    equilibrium z: [B, T, D] = block(z, u)
        with solver = anderson(m = 5, tol = 1e-3, max_iter = 24),
             backward = phantom(steps = 5, damping = 0.8);
    out(z)
}

train CharDeq {
    data = text("data/kjv", level = "char", seq_len = 64, vocab = V);
    loss = cross_entropy;
    optimizer = adamw(lr = 3e-4, weight_decay = 0.01);
    epochs = 1;
    batch_size = 32;
    clip_grad = 1.0;
}
"#;

pub const MONDEQ: &str = r#"// A monotone operator equilibrium (monDEQ): a unique fixed point by construction.
use nn;

layer MonotoneCell[n: int, d: int](z: [B, n], x: [B, d]) -> [B, n] {
    param a: [n, n] = normal(std = 0.05);
    param s: [n, n] = normal(std = 0.05);
    param u: [d, n] = kaiming_uniform(fan_in = d);
    param b: [n] = zeros;
    let m = 0.5;
    let w = (1.0 - m) * eye(n) - transpose(a, 0, 1) @ a + s - transpose(s, 0, 1);
    relu(z @ w + x @ u + b)
}

model MonDeq(x: [B, 784]) -> [B, 10] {
    let cell = MonotoneCell[128, 784];
    let head = nn::Linear[128, 10];
    equilibrium z: [B, 128] = cell(z, x) with solver = fixed_point(damping = 0.5, max_iter = 60);
    head(z)
}
"#;

/// The section 6 snippet inside a model, as it must appear in a program.
pub fn eq_snippet_in_model() -> String {
    format!("model M(u: [B, H]) -> [B, H] {{\n{EQ_SNIPPET}    z\n}}\n")
}
