//! Native code for fused kernels: the kernel IR, its cache and its compiler.
//!
//! Owns [`Kernel`] (the small straight-line program a fusion group lowers
//! to: elementwise ops, selects and row reductions over one row of a
//! tensor), [`compile`] (cranelift, with the `jit` feature) and the process
//! wide cache of compiled kernels. Guarantees:
//! - a compiled kernel computes, for one row, what [`Kernel::eval_row`] (the
//!   scalar reference) computes, up to the summation order of reductions
//!   (row functions such as softmax are the same calls in both);
//! - transcendentals go through the registered `extern "C"` strip functions
//!   of [`strip`] (vectorized with rten-vecmath in f32), never through code
//!   of their own, so every kernel agrees with every other and with the
//!   plain executor's f32 SIMD kernels;
//! - a kernel structure is compiled once per process ([`compile`] caches by
//!   the kernel's full structural key), and [`compile_stats`] reports how
//!   many compilations happened and how long they took.

#[cfg(feature = "jit")]
mod codegen;
pub mod strip;

use std::hash::{Hash, Hasher};

use crate::ir::Cmp;

/// The float type a kernel computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KType {
    F32,
    F64,
}

impl KType {
    pub fn size(self) -> usize {
        match self {
            KType::F32 => 4,
            KType::F64 => 8,
        }
    }
}

/// A value of a kernel: the index of the instruction that computes it.
pub type KValue = usize;

/// One-operand functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Neg,
    Abs,
    Sqrt,
    Relu,
    /// A transcendental: evaluated by its strip function, never inline.
    Strip(strip::Func),
    /// `relu(x) + slope * (x - relu(x))`, as the plain kernel computes it.
    LeakyRelu(f64),
    /// `min(max(x, lo), hi)`.
    Clamp(f64, f64),
}

impl Unary {
    /// The strip function that evaluates it, for transcendentals.
    pub fn strip(self) -> Option<strip::Func> {
        match self {
            Unary::Strip(f) => Some(f),
            Unary::Neg
            | Unary::Abs
            | Unary::Sqrt
            | Unary::Relu
            | Unary::LeakyRelu(_)
            | Unary::Clamp(..) => None,
        }
    }
}

/// Two-operand functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `a^b` with `powf`'s conventions (a strip function).
    Pow,
    /// A comparison giving 1 or 0.
    Cmp(Cmp),
}

/// A reduction along the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowReduce {
    Sum,
    Max,
    Min,
}

/// One instruction. Operands are earlier instructions.
#[derive(Debug, Clone, PartialEq)]
pub enum Inst {
    /// The kernel's i-th input (see [`InputKind`]).
    Input(usize),
    Const(f64),
    Unary(Unary, KValue),
    Binary(Binary, KValue, KValue),
    /// `a` where `mask` is nonzero, else `b`.
    Select(KValue, KValue, KValue),
    /// A full-row value reduced to one value per row.
    Reduce(RowReduce, KValue),
    /// A function of the whole row of a full value, element by element
    /// (softmax): computed by one call of its row function after the pass
    /// that writes the operand, into the buffer of an output of the kernel,
    /// which it must be.
    RowFn(strip::RowFunc, KValue),
}

impl Inst {
    /// The instructions this one reads.
    pub fn operands(&self) -> Vec<KValue> {
        match self {
            Inst::Unary(_, a) | Inst::Reduce(_, a) | Inst::RowFn(_, a) => vec![*a],
            Inst::Binary(_, a, b) => vec![*a, *b],
            Inst::Select(m, a, b) => vec![*m, *a, *b],
            Inst::Input(_) | Inst::Const(_) => vec![],
        }
    }
}

/// How an input is read in each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// `len` consecutive elements.
    Row,
    /// One value, the same along the row.
    Scalar,
}

/// Whether a value has one element per row position or one per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Full,
    Row,
}

/// A fused kernel: computes its outputs for one row of `len` elements.
///
/// Called with one pointer per input then per output, each at the row's
/// start: a [`Level::Full`] output gets `len` elements, a [`Level::Row`]
/// output one.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub ty: KType,
    pub inputs: Vec<InputKind>,
    pub insts: Vec<Inst>,
    pub outputs: Vec<KValue>,
}

/// The level of every instruction of `insts`, input `i` being at
/// `input_level(i)`.
pub fn levels_of(insts: &[Inst], input_level: impl Fn(usize) -> Level) -> Vec<Level> {
    let mut lv: Vec<Level> = Vec::with_capacity(insts.len());
    for inst in insts {
        let l = match inst {
            Inst::Input(i) => input_level(*i),
            Inst::Const(_) | Inst::Reduce(..) => Level::Row,
            Inst::RowFn(..) => Level::Full,
            Inst::Unary(_, a) => lv[*a],
            Inst::Binary(_, a, b) => max_level(lv[*a], lv[*b]),
            Inst::Select(m, a, b) => max_level(lv[*m], max_level(lv[*a], lv[*b])),
        };
        lv.push(l);
    }
    lv
}

impl Kernel {
    /// The level of every instruction.
    pub fn levels(&self) -> Vec<Level> {
        levels_of(&self.insts, |i| match self.inputs.get(i) {
            Some(InputKind::Row) => Level::Full,
            _ => Level::Row,
        })
    }

    /// The row function whose call the kernel leaves to its caller, and
    /// the output it writes, in place: the kernel's only row function, an
    /// output once, read by no instruction, of an operand the kernel
    /// computes (the pass writes it into that output's buffer). Calling it
    /// a row later saves the stall of wide loads over the narrow stores
    /// that just wrote the row (25 ns of about 85 for a softmax row of 64;
    /// see [`call_lagged`]).
    pub fn deferred_row(&self) -> Option<(strip::RowFunc, usize)> {
        let mut rows = self.insts.iter().enumerate().filter_map(|(k, i)| match i {
            Inst::RowFn(f, a) => Some((k, *f, *a)),
            _ => None,
        });
        let (r, f, a) = rows.next()?;
        if rows.next().is_some()
            || matches!(self.insts[a], Inst::Input(_))
            || self.outputs.contains(&a)
            || self.outputs.iter().filter(|o| **o == r).count() != 1
            || self.insts.iter().any(|i| i.operands().contains(&r))
        {
            return None;
        }
        Some((f, self.outputs.iter().position(|o| *o == r)?))
    }

    /// Whether the kernel reduces along the row (then a row cannot be split).
    pub fn has_reductions(&self) -> bool {
        self.insts
            .iter()
            .any(|i| matches!(i, Inst::Reduce(..) | Inst::RowFn(..)))
    }

    /// A structural check: operands precede their users, reductions read
    /// full values, inputs and outputs exist.
    pub fn validate(&self) -> Result<(), String> {
        let levels = self.levels();
        for (k, inst) in self.insts.iter().enumerate() {
            match inst {
                Inst::Input(i) if *i >= self.inputs.len() => {
                    return Err(format!("instruction {k} reads missing input {i}"));
                }
                Inst::Reduce(_, a) if *a < k && levels[*a] != Level::Full => {
                    return Err(format!("instruction {k} reduces a per-row value"));
                }
                Inst::RowFn(_, a) => {
                    if *a < k && levels[*a] != Level::Full {
                        return Err(format!(
                            "instruction {k} is a row function of a per-row value"
                        ));
                    }
                    if !self.outputs.contains(&k) {
                        return Err(format!("row function {k} is not an output"));
                    }
                }
                _ => {}
            }
            if inst.operands().iter().any(|o| *o >= k) {
                return Err(format!("instruction {k} reads a later value"));
            }
        }
        if self.outputs.iter().any(|o| *o >= self.insts.len()) {
            return Err("an output is not an instruction".into());
        }
        Ok(())
    }

    /// The structural key of the compiled code (float constants by bits).
    pub fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.ty.hash(&mut h);
        self.inputs.hash(&mut h);
        self.outputs.hash(&mut h);
        for inst in &self.insts {
            match inst {
                Inst::Input(i) => (0u8, *i).hash(&mut h),
                Inst::Const(v) => (1u8, v.to_bits()).hash(&mut h),
                Inst::Unary(u, a) => {
                    (2u8, *a, format!("{u:?}")).hash(&mut h);
                    if let Unary::LeakyRelu(s) = u {
                        s.to_bits().hash(&mut h);
                    }
                    if let Unary::Clamp(lo, hi) = u {
                        (lo.to_bits(), hi.to_bits()).hash(&mut h);
                    }
                }
                Inst::Binary(b, x, y) => (3u8, *b, *x, *y).hash(&mut h),
                Inst::Select(m, a, b) => (4u8, *m, *a, *b).hash(&mut h),
                Inst::Reduce(r, a) => (5u8, *r, *a).hash(&mut h),
                Inst::RowFn(f, a) => (6u8, *f, *a).hash(&mut h),
            }
        }
        h.finish()
    }

    /// The scalar reference: evaluates one row in f64 arithmetic of the
    /// kernel's type (f32 kernels round every result to f32), with
    /// sequential reductions. `inputs[i]` holds `len` values for a
    /// [`InputKind::Row`] input and one for a scalar one; the result holds
    /// `len` values per full output and one per row output.
    pub fn eval_row(&self, inputs: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
        let levels = self.levels();
        let round = |v: f64| match self.ty {
            KType::F32 => v as f32 as f64,
            KType::F64 => v,
        };
        let mut vals: Vec<Vec<f64>> = Vec::with_capacity(self.insts.len());
        for (k, inst) in self.insts.iter().enumerate() {
            let n = if levels[k] == Level::Full { len } else { 1 };
            let at = |vals: &Vec<Vec<f64>>, v: KValue, i: usize| -> f64 {
                let x: &Vec<f64> = &vals[v];
                if x.len() == 1 {
                    x[0]
                } else {
                    x[i]
                }
            };
            let out: Vec<f64> = match inst {
                Inst::Input(i) => inputs[*i][..n].to_vec(),
                Inst::Const(c) => vec![round(*c)],
                Inst::Unary(u, a) => (0..n)
                    .map(|i| round(strip::reference_unary(*u, at(&vals, *a, i), self.ty)))
                    .collect(),
                Inst::Binary(b, x, y) => (0..n)
                    .map(|i| {
                        round(strip::reference_binary(
                            *b,
                            at(&vals, *x, i),
                            at(&vals, *y, i),
                        ))
                    })
                    .collect(),
                Inst::Select(m, a, b) => (0..n)
                    .map(|i| {
                        if at(&vals, *m, i) != 0.0 {
                            at(&vals, *a, i)
                        } else {
                            at(&vals, *b, i)
                        }
                    })
                    .collect(),
                Inst::Reduce(r, a) => {
                    let x = &vals[*a];
                    let v = match r {
                        RowReduce::Sum => x.iter().fold(0.0, |s, v| round(s + v)),
                        RowReduce::Max => x.iter().fold(f64::NEG_INFINITY, |s, v| s.max(*v)),
                        RowReduce::Min => x.iter().fold(f64::INFINITY, |s, v| s.min(*v)),
                    };
                    vec![v]
                }
                Inst::RowFn(f, a) => strip::reference_row(*f, &vals[*a], self.ty),
            };
            vals.push(out);
        }
        self.outputs.iter().map(|o| vals[*o].clone()).collect()
    }
}

fn max_level(a: Level, b: Level) -> Level {
    if a == Level::Full || b == Level::Full {
        Level::Full
    } else {
        Level::Row
    }
}

/// A compiled kernel's entry: `f(pointers, len)`, the pointers being the
/// row starts of every input, then of every output.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, i64);

/// `dst[i] = f(src)[i]` for the `n` elements of a row; `src` may be `dst`.
pub type RowStrip = unsafe extern "C" fn(*const u8, *mut u8, i64);

/// A compiled kernel (the code lives as long as the process).
#[derive(Clone, Copy)]
pub struct Compiled {
    pub func: KernelFn,
    pub has_reductions: bool,
    /// [`Kernel::deferred_row`]: the row function the caller runs in place
    /// on the output at this index of the row pointers, after `func`.
    pub deferred: Option<(RowStrip, usize)>,
}

/// Compilations so far and the time they took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompileStats {
    pub kernels: usize,
    pub seconds: f64,
}

/// Compiled kernels by structural key (with the kernel, against
/// collisions), and the compilations so far.
#[cfg(feature = "jit")]
type Cache = (
    std::collections::HashMap<u64, Vec<(Kernel, Compiled)>>,
    CompileStats,
);

#[cfg(feature = "jit")]
static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();

/// Whether this build can compile kernels.
pub fn available() -> bool {
    cfg!(feature = "jit")
}

/// The compiled code of `kernel`, compiling it on first use.
#[cfg(feature = "jit")]
pub fn compile(kernel: &Kernel) -> Result<Compiled, String> {
    kernel.validate()?;
    let key = kernel.key();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().map_err(|_| "the kernel cache is poisoned")?;
    if let Some(found) = guard
        .0
        .get(&key)
        .and_then(|v| v.iter().find(|(k, _)| k == kernel))
    {
        return Ok(found.1);
    }
    let start = std::time::Instant::now();
    let func = codegen::compile(kernel)?;
    let compiled = Compiled {
        func,
        has_reductions: kernel.has_reductions(),
        deferred: kernel
            .deferred_row()
            .map(|(f, o)| (strip::row(f, kernel.ty), kernel.inputs.len() + o)),
    };
    guard.1.kernels += 1;
    guard.1.seconds += start.elapsed().as_secs_f64();
    guard
        .0
        .entry(key)
        .or_default()
        .push((kernel.clone(), compiled));
    Ok(compiled)
}

/// Without the `jit` feature nothing compiles (the executor runs plain).
#[cfg(not(feature = "jit"))]
pub fn compile(_kernel: &Kernel) -> Result<Compiled, String> {
    Err("this build has no code generator (feature `jit`)".into())
}

/// Kernels compiled by this process so far, and the seconds spent.
pub fn compile_stats() -> CompileStats {
    #[cfg(feature = "jit")]
    {
        CACHE
            .get()
            .and_then(|c| c.lock().ok().map(|g| g.1))
            .unwrap_or_default()
    }
    #[cfg(not(feature = "jit"))]
    {
        CompileStats::default()
    }
}

/// Run a compiled kernel over `rows` rows.
///
/// # Safety
/// `ptrs` holds one valid row-start pointer per input and output, each with
/// `len` (row inputs/full outputs) or 1 elements of the kernel's type.
pub unsafe fn call(compiled: &Compiled, ptrs: &[*mut u8], len: usize) {
    let mut pending = None;
    call_lagged(compiled, ptrs, len, &mut pending);
    finish_lagged(compiled, len, &mut pending);
}

/// [`call`] for one of consecutive rows of one length: the deferred row
/// function (if any) runs on the row before this one, whose stores have
/// drained by now; `pending` carries that row's output pointer from call
/// to call. After the last row, [`finish_lagged`] completes it.
///
/// # Safety
/// As [`call`], for every row, and `pending` only ever set by this function
/// for rows of this `len` whose buffers are still live.
pub unsafe fn call_lagged(
    compiled: &Compiled,
    ptrs: &[*mut u8],
    len: usize,
    pending: &mut Option<*mut u8>,
) {
    (compiled.func)(ptrs.as_ptr(), len as i64);
    if let Some((f, at)) = compiled.deferred {
        if let Some(p) = pending.replace(ptrs[at]) {
            f(p, p, len as i64);
        }
    }
}

/// Completes the row left pending by [`call_lagged`].
///
/// # Safety
/// As [`call_lagged`].
pub unsafe fn finish_lagged(compiled: &Compiled, len: usize, pending: &mut Option<*mut u8>) {
    if let (Some((f, _)), Some(p)) = (compiled.deferred, pending.take()) {
        f(p, p, len as i64);
    }
}

#[cfg(all(test, feature = "jit"))]
mod tests;
