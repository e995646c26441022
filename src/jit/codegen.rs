//! Cranelift code generation for one [`Kernel`].
//!
//! Owns the translation of the kernel IR into one native function
//! `f(row_pointers, len)`. The row is strip-mined: each pass over the row
//! walks it in strips of [`STRIP_BYTES`]. Within a strip, each run of
//! arithmetic between transcendental calls is one loop (128-bit vectors,
//! `F32X4`/`F64X2`, then a scalar tail) that keeps its values in registers
//! ([`segment`]); values handed to a strip function or to a later run go
//! through scratch buffers on the stack that stay in L1. Per-row values
//! (reductions and what depends only on them) are pinned in stack slots and
//! loaded where used, never re-derived inside a loop.
//! Reductions accumulate during the pass in which their operand is ready,
//! in four vector accumulators each ([`loops`]); their consumers run in a
//! later pass (softmax takes three: max, sum of exponentials, product with
//! the sum's reciprocal). Values needed again in a later pass are
//! recomputed, except outputs, which are read back from the output buffer,
//! and values with a transcendental in them that a later pass's output
//! alone reads, which are kept in that output's buffer until then
//! ([`passes::choose_stash`]: softmax's exponentials).
//! Transcendentals call the registered strip functions of [`super::strip`].
//! A row function (softmax) is one call per row after the pass that writes
//! its operand into the function's output buffer; later passes read the
//! result from there. A row function that nothing in the kernel reads
//! ([`super::Kernel::deferred_row`]) is left to the caller, which runs it
//! in place a row later.
//! Guarantees: every input row is only read, every output element written
//! exactly once per pass that produces it; no code depends on the row length
//! except through `len`.

use std::collections::HashMap;
use std::sync::OnceLock;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type,
    UserFuncName, Value,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

mod loops;
pub(super) mod passes;
mod segment;

use self::loops::Acc;
use self::passes::{choose_stash, needed_in, ready_passes, roots_of};
use self::segment::{float_cc, units_of, Unit};
use super::strip::{self, Func, RowFunc};
use super::{Binary, InputKind, Inst, KType, Kernel, KernelFn, Level, Unary};

/// Bytes of one strip (per scratch buffer).
const STRIP_BYTES: i64 = 512;

const ALL_FUNCS: [Func; 8] = [
    Func::Exp,
    Func::Log,
    Func::Tanh,
    Func::Sigmoid,
    Func::Gelu,
    Func::Softplus,
    Func::Sin,
    Func::Cos,
];

fn isa() -> Result<OwnedTargetIsa, String> {
    static ISA: OnceLock<Result<OwnedTargetIsa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut flags = settings::builder();
        let set = |f: &mut settings::Builder, k: &str, v: &str| {
            f.set(k, v)
                .map_err(|e| format!("cranelift setting {k}: {e}"))
        };
        set(&mut flags, "opt_level", "speed")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        let builder = cranelift_native::builder().map_err(|e| e.to_string())?;
        builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())
    })
    .clone()
}

fn symbol(f: Func, ty: KType) -> String {
    format!("deqc_strip_{f:?}_{ty:?}").to_lowercase()
}

fn pow_symbol(ty: KType) -> String {
    format!("deqc_strip_pow_{ty:?}").to_lowercase()
}

fn row_symbol(f: RowFunc, ty: KType) -> String {
    format!("deqc_row_{f:?}_{ty:?}").to_lowercase()
}

const ALL_ROW_FUNCS: [RowFunc; 1] = [RowFunc::Softmax];

/// Compile `kernel`; the module is kept for the life of the process.
pub fn compile(kernel: &Kernel) -> Result<KernelFn, String> {
    let isa = isa()?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    for ty in [KType::F32, KType::F64] {
        for f in ALL_FUNCS {
            jb.symbol(symbol(f, ty), strip::unary(f, ty) as *const u8);
        }
        jb.symbol(pow_symbol(ty), strip::pow(ty) as *const u8);
        for f in ALL_ROW_FUNCS {
            jb.symbol(row_symbol(f, ty), strip::row(f, ty) as *const u8);
        }
    }
    let mut module = JITModule::new(jb);
    let ptr_ty = module.target_config().pointer_type();
    let err = |e: cranelift_module::ModuleError| e.to_string();

    let mut unary_sig = module.make_signature();
    for t in [ptr_ty, ptr_ty, types::I64] {
        unary_sig.params.push(AbiParam::new(t));
    }
    let mut pow_sig = module.make_signature();
    for t in [ptr_ty, types::I64, ptr_ty, types::I64, ptr_ty, types::I64] {
        pow_sig.params.push(AbiParam::new(t));
    }
    let mut imports = HashMap::new();
    for f in ALL_FUNCS {
        let id = module
            .declare_function(&symbol(f, kernel.ty), Linkage::Import, &unary_sig)
            .map_err(err)?;
        imports.insert(Some(f), id);
    }
    let pow_id = module
        .declare_function(&pow_symbol(kernel.ty), Linkage::Import, &pow_sig)
        .map_err(err)?;
    imports.insert(None, pow_id);
    let mut row_imports = HashMap::new();
    for f in ALL_ROW_FUNCS {
        let id = module
            .declare_function(&row_symbol(f, kernel.ty), Linkage::Import, &unary_sig)
            .map_err(err)?;
        row_imports.insert(f, id);
    }

    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr_ty));
    sig.params.push(AbiParam::new(types::I64));
    let fid = module
        .declare_function("kernel", Linkage::Export, &sig)
        .map_err(err)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut funcs = HashMap::new();
        for (k, id) in &imports {
            funcs.insert(*k, module.declare_func_in_func(*id, b.func));
        }
        let mut row_funcs = HashMap::new();
        for (f, id) in &row_imports {
            row_funcs.insert(*f, module.declare_func_in_func(*id, b.func));
        }
        let (ty, vty, lanes) = match kernel.ty {
            KType::F32 => (types::F32, types::F32X4, 4),
            KType::F64 => (types::F64, types::F64X2, 2),
        };
        let mut g = Gen {
            b: &mut b,
            k: kernel,
            ty,
            vty,
            lanes,
            size: kernel.ty.size() as i64,
            ptr_ty,
            mf: MemFlagsData::new().with_notrap(),
            funcs,
            row_funcs,
            scratch: HashMap::new(),
        };
        g.emit()?;
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(fid, &mut ctx).map_err(err)?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(err)?;
    let code = module.get_finalized_function(fid);
    // The code must outlive every caller: the module is never freed.
    std::mem::forget(module);
    // SAFETY: the function was built with exactly this signature.
    Ok(unsafe { std::mem::transmute::<*const u8, KernelFn>(code) })
}

/// Where an operand of a strip loop comes from.
#[derive(Clone, Copy)]
enum Src {
    /// Consecutive elements from this address (the strip's start).
    Mem(Value),
    /// The same value everywhere: the address of a 16-byte stack slot
    /// holding it in every lane (see [`Gen::pin_row`]).
    Pinned(Value),
}

/// Stack-slot keys of pinned per-row values start here (instruction `i`
/// has key `PINNED_SLOTS + i`); smaller keys are strip scratch buffers.
const PINNED_SLOTS: usize = usize::MAX / 2;

/// What one pass over the row computes.
struct Pass<'a> {
    p: usize,
    len: Value,
    needed: &'a [bool],
    reductions: &'a [usize],
    ready: &'a [usize],
    levels: &'a [Level],
    row_ptr: &'a [Value],
    outputs_of: &'a HashMap<usize, Vec<usize>>,
    /// Stashed values and the output slot that holds them (see
    /// [`choose_stash`]).
    stash: &'a HashMap<usize, usize>,
}

struct Gen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    k: &'a Kernel,
    ty: Type,
    vty: Type,
    lanes: i64,
    size: i64,
    ptr_ty: Type,
    mf: MemFlagsData,
    funcs: HashMap<Option<Func>, FuncRef>,
    row_funcs: HashMap<RowFunc, FuncRef>,
    scratch: HashMap<usize, cranelift_codegen::ir::StackSlot>,
}

impl Gen<'_, '_> {
    fn fconst(&mut self, v: f64) -> Value {
        if self.ty == types::F32 {
            self.b.ins().f32const(Ieee32::with_float(v as f32))
        } else {
            self.b.ins().f64const(Ieee64::with_float(v))
        }
    }

    fn strip_len(&self) -> i64 {
        STRIP_BYTES / self.size
    }

    fn slot_addr(&mut self, key: usize, bytes: i64) -> Value {
        let slot = *self.scratch.entry(key).or_insert_with(|| {
            self.b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                bytes as u32,
                4,
            ))
        });
        self.b.ins().stack_addr(self.ptr_ty, slot, 0)
    }

    /// Store per-row value `i` splatted into its own stack slot. Loops read
    /// it from there: a load per step is cheaper than what cranelift does
    /// with a register value live across the strip functions' calls (it
    /// re-derived such values, reductions' lane combines included, inside
    /// every vector step).
    fn pin_row(&mut self, i: usize, v: Value) {
        let splat = self.b.ins().splat(self.vty, v);
        let addr = self.slot_addr(PINNED_SLOTS + i, 16);
        self.b.ins().store(self.mf, splat, addr, 0);
    }

    fn emit(&mut self) -> Result<(), String> {
        let k = self.k;
        let levels = k.levels();
        let n_in = k.inputs.len();
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (ptrs, len) = (params[0], params[1]);
        let mut row_ptr = Vec::new();
        for j in 0..n_in + k.outputs.len() {
            let off = (j * self.ptr_ty.bytes() as usize) as i32;
            row_ptr.push(self.b.ins().load(self.ptr_ty, self.mf, ptrs, off));
        }
        let ready = ready_passes(k);
        let passes = ready.iter().copied().max().unwrap_or(0);
        let mut outputs_of: HashMap<usize, Vec<usize>> = HashMap::new();
        for (o, v) in k.outputs.iter().enumerate() {
            outputs_of.entry(*v).or_default().push(n_in + o);
        }
        let stash = choose_stash(k, passes, &ready, &levels, &outputs_of);
        let mut row_val: Vec<Option<Value>> = vec![None; k.insts.len()];
        for p in 0..=passes {
            // Per-row values of this pass, in order.
            for (i, inst) in k.insts.iter().enumerate() {
                if levels[i] != Level::Row || ready[i] != p || matches!(inst, Inst::Reduce(..)) {
                    continue;
                }
                let v = self.row_inst(inst, &row_val, &row_ptr)?;
                row_val[i] = Some(v);
                self.pin_row(i, v);
                for o in outputs_of.get(&i).into_iter().flatten() {
                    self.b.ins().store(self.mf, v, row_ptr[*o], 0);
                }
            }
            // Full values this pass must produce: its outputs and the
            // operands of its reductions.
            let reductions: Vec<usize> = (0..k.insts.len())
                .filter(|&i| matches!(k.insts[i], Inst::Reduce(..)) && ready[i] == p + 1)
                .collect();
            let roots = roots_of(k, p, &ready, &levels, &outputs_of);
            if roots.is_empty() {
                continue;
            }
            let needed = needed_in(k, p, &roots, &ready, &levels, &outputs_of, &stash);
            let pass = Pass {
                p,
                len,
                needed: &needed,
                reductions: &reductions,
                ready: &ready,
                levels: &levels,
                row_ptr: &row_ptr,
                outputs_of: &outputs_of,
                stash: &stash,
            };
            let finals = self.strip_pass(&pass, &row_val)?;
            for (r, v) in finals {
                row_val[r] = Some(v);
                self.pin_row(r, v);
                for o in outputs_of.get(&r).into_iter().flatten() {
                    self.b.ins().store(self.mf, v, row_ptr[*o], 0);
                }
            }
            // Per-row values that only depend on these reductions are
            // computed at the start of the next pass.
        }
        self.b.ins().return_(&[]);
        Ok(())
    }

    /// One walk over the row in strips; returns the finished reductions.
    fn strip_pass(
        &mut self,
        pass: &Pass,
        row_val: &[Option<Value>],
    ) -> Result<Vec<(usize, Value)>, String> {
        let Pass {
            p,
            len,
            needed,
            reductions,
            ready,
            levels,
            row_ptr,
            outputs_of,
            stash,
        } = *pass;
        let k = self.k;
        // Accumulators.
        let mut accs = Vec::new();
        for r in reductions {
            let Inst::Reduce(op, a) = k.insts[*r] else {
                continue;
            };
            let acc = self.new_acc(op);
            accs.push((*r, a, acc));
        }
        let off = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(off, zero);
        let exit = self.b.create_block();
        let header = self.enter_loop(exit, |g| {
            let o = g.b.use_var(off);
            g.b.ins().icmp(IntCC::SignedLessThan, o, len)
        });
        let o = self.b.use_var(off);
        let rem = self.b.ins().isub(len, o);
        let strip = self.strip_len();
        let kmax = self.b.ins().iconst(types::I64, strip);
        let short = self.b.ins().icmp(IntCC::SignedLessThan, rem, kmax);
        let n = self.b.ins().select(short, rem, kmax);
        let byte_off = self.b.ins().imul_imm_s(o, self.size);
        // Where each value of this pass lives during the strip.
        let mut loc: HashMap<usize, Src> = HashMap::new();
        for (i, inst) in k.insts.iter().enumerate() {
            if levels[i] == Level::Row {
                if row_val[i].is_some() {
                    let addr = self.slot_addr(PINNED_SLOTS + i, 16);
                    loc.insert(i, Src::Pinned(addr));
                }
                continue;
            }
            if let Inst::Input(j) = inst {
                let a = self.b.ins().iadd(row_ptr[*j], byte_off);
                loc.insert(i, Src::Mem(a));
            } else if (ready[i] < p || ready[i] == p && matches!(inst, Inst::RowFn(..)))
                && outputs_of.contains_key(&i)
                && !needed[i]
            {
                let a = self.b.ins().iadd(row_ptr[outputs_of[&i][0]], byte_off);
                loc.insert(i, Src::Mem(a));
            } else if let Some(slot) = stash.get(&i).filter(|_| ready[i] < p && !needed[i]) {
                let a = self.b.ins().iadd(row_ptr[*slot], byte_off);
                loc.insert(i, Src::Mem(a));
            }
        }
        let units = units_of(k, needed);
        let mut unit_of: HashMap<usize, usize> = HashMap::new();
        for (u, unit) in units.iter().enumerate() {
            for i in unit.insts() {
                unit_of.insert(i, u);
            }
        }
        // Values that must be in memory: this pass's outputs, and values
        // read by another unit (a strip function reads only memory).
        let mut stored = vec![false; k.insts.len()];
        for (u, unit) in units.iter().enumerate() {
            for j in unit.insts() {
                for a in k.insts[j].operands() {
                    if unit_of.get(&a).is_some_and(|ua| *ua != u) {
                        stored[a] = true;
                    }
                }
            }
        }
        // Reductions of a value computed in a segment accumulate in its loop.
        let mut folded: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut separate = Vec::new();
        for (x, (_, a, _)) in accs.iter().enumerate() {
            match unit_of.get(a).map(|u| &units[*u]) {
                Some(Unit::Segment(_)) => folded.entry(unit_of[a]).or_default().push(x),
                _ => {
                    stored[*a] = true;
                    separate.push(x);
                }
            }
        }
        // Each stored value's addresses (at the strip's start): its outputs
        // when this pass produces them, else a scratch buffer.
        let mut dsts: HashMap<usize, Vec<Value>> = HashMap::new();
        for i in 0..k.insts.len() {
            if !needed[i] {
                continue;
            }
            let outs = outputs_of.get(&i).cloned().unwrap_or_default();
            let mut at = Vec::new();
            if ready[i] == p && !outs.is_empty() {
                for o in &outs {
                    at.push(self.b.ins().iadd(row_ptr[*o], byte_off));
                }
            } else if let Some(slot) = stash.get(&i).filter(|_| ready[i] == p) {
                at.push(self.b.ins().iadd(row_ptr[*slot], byte_off));
            } else if stored[i] || matches!(units[unit_of[&i]], Unit::Strip(_)) {
                at.push(self.slot_addr(i, STRIP_BYTES));
            }
            // The operand of a row function that finishes with this pass
            // goes into the function's output buffer, where the call after
            // the pass reads it.
            for r in row_fns_of(k, i, p, ready) {
                let slots = outputs_of
                    .get(&r)
                    .ok_or_else(|| format!("row function {r} is not an output"))?;
                at.push(self.b.ins().iadd(row_ptr[slots[0]], byte_off));
            }
            if let Some(first) = at.first() {
                loc.insert(i, Src::Mem(*first));
            }
            dsts.insert(i, at);
        }
        for (u, unit) in units.iter().enumerate() {
            match unit {
                Unit::Strip(i) => {
                    let i = *i;
                    let src = |v: usize| -> Result<Src, String> {
                        loc.get(&v)
                            .copied()
                            .ok_or_else(|| format!("value {v} is not available for {i}"))
                    };
                    let at = dsts[&i].clone();
                    let dst = at[0];
                    self.strip_call(&k.insts[i], src, dst, n)?;
                    for extra in at.iter().skip(1) {
                        self.copy_loop(dst, *extra, n);
                    }
                }
                Unit::Segment(members) => {
                    let (reduced, rows): (Vec<usize>, Vec<Acc>) = folded
                        .get(&u)
                        .into_iter()
                        .flatten()
                        .map(|x| (accs[*x].1, accs[*x].2.clone()))
                        .unzip();
                    self.segment_loop(members, &loc, &dsts, (&reduced, &rows), n)?;
                }
            }
        }
        // Reductions of values read from memory.
        for x in separate {
            let (_, a, acc) = &accs[x];
            let Some(Src::Mem(addr)) = loc.get(a).copied() else {
                return Err(format!("reduced value {a} is not in memory"));
            };
            self.reduce_loop(acc, addr, n);
        }
        let o = self.b.use_var(off);
        let next = self.b.ins().iadd(o, n);
        self.b.def_var(off, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        self.row_calls(pass)?;
        let mut finals = Vec::new();
        for (r, _, acc) in &accs {
            let v = self.finish_acc(acc);
            finals.push((*r, v));
        }
        Ok(finals)
    }

    /// The calls of the row functions that finish with pass `p`, each from
    /// where its operand's row is (its own output buffer when this pass
    /// computed the operand) into its output, then copied to any further
    /// output slot of the same value.
    fn row_calls(&mut self, pass: &Pass) -> Result<(), String> {
        let Pass {
            p,
            len,
            needed,
            ready,
            row_ptr,
            outputs_of,
            stash,
            ..
        } = *pass;
        let k = self.k;
        for (r, inst) in k.insts.iter().enumerate() {
            let Inst::RowFn(f, a) = *inst else {
                continue;
            };
            if ready[r] != p + 1 {
                continue;
            }
            let slots = outputs_of
                .get(&r)
                .ok_or_else(|| format!("row function {r} is not an output"))?;
            let dst = row_ptr[slots[0]];
            let src = if needed[a] {
                dst
            } else if let Inst::Input(j) = k.insts[a] {
                row_ptr[j]
            } else if let Some(o) = outputs_of.get(&a) {
                row_ptr[o[0]]
            } else if let Some(slot) = stash.get(&a) {
                row_ptr[*slot]
            } else {
                return Err(format!("the operand of row function {r} is not in memory"));
            };
            if k.deferred_row().is_some() {
                // The caller runs it a row later (`jit::call_lagged`), in
                // place on the output, so the operand must be there.
                if !needed[a] {
                    return Err(format!("deferred row function {r} is not in place"));
                }
                continue;
            }
            let fr = self.row_funcs[&f];
            self.b.ins().call(fr, &[src, dst, len]);
            for extra in &slots[1..] {
                self.copy_loop(dst, row_ptr[*extra], len);
            }
        }
        Ok(())
    }

    /// A constant of the right shape (vector or scalar).
    fn konst(&mut self, v: f64, vector: bool) -> Value {
        let c = self.fconst(v);
        if vector {
            self.b.ins().splat(self.vty, c)
        } else {
            c
        }
    }

    /// The arithmetic (non-strip) unary functions on a vector or scalar.
    fn arith_unary(&mut self, u: Unary, x: Value, vector: bool) -> Value {
        match u {
            Unary::Neg => self.b.ins().fneg(x),
            Unary::Abs => self.b.ins().fabs(x),
            Unary::Sqrt => self.b.ins().sqrt(x),
            Unary::Relu => {
                let z = self.konst(0.0, vector);
                self.b.ins().fmax(x, z)
            }
            Unary::LeakyRelu(s) => {
                let z = self.konst(0.0, vector);
                let r = self.b.ins().fmax(x, z);
                let d = self.b.ins().fsub(x, r);
                let s = self.konst(s, vector);
                let m = self.b.ins().fmul(d, s);
                self.b.ins().fadd(r, m)
            }
            Unary::Clamp(lo, hi) => {
                let lo = self.konst(lo, vector);
                let hi = self.konst(hi, vector);
                let m = self.b.ins().fmax(x, lo);
                self.b.ins().fmin(m, hi)
            }
            // Strip functions are handled by the callers.
            Unary::Strip(_) => x,
        }
    }

    fn arith_binary(&mut self, op: Binary, a: Value, b: Value) -> Value {
        match op {
            Binary::Add => self.b.ins().fadd(a, b),
            Binary::Sub => self.b.ins().fsub(a, b),
            Binary::Mul => self.b.ins().fmul(a, b),
            Binary::Div => self.b.ins().fdiv(a, b),
            Binary::Max => self.b.ins().fmax(a, b),
            Binary::Min => self.b.ins().fmin(a, b),
            Binary::Cmp(c) => {
                let c = self.b.ins().fcmp(float_cc(c), a, b);
                let (one, zero) = (self.fconst(1.0), self.fconst(0.0));
                self.b.ins().select(c, one, zero)
            }
            // Handled by the callers (a strip function).
            Binary::Pow => a,
        }
    }

    /// Memory holding a per-row value (stride 0) or the strip itself.
    fn as_memory(&mut self, s: Src) -> (Value, Value) {
        match s {
            Src::Mem(a) => (a, self.b.ins().iconst(types::I64, 1)),
            Src::Pinned(a) => (a, self.b.ins().iconst(types::I64, 0)),
        }
    }

    /// A scalar stored at the start of stack slot `key`, as an operand.
    fn scalar_in_slot(&mut self, v: Value, key: usize) -> Src {
        let a = self.slot_addr(key, 16);
        self.b.ins().store(self.mf, v, a, 0);
        Src::Pinned(a)
    }

    /// A strip unit: one call of the instruction's strip function over the
    /// strip, from memory into `dst`.
    fn strip_call(
        &mut self,
        inst: &Inst,
        src: impl Fn(usize) -> Result<Src, String>,
        dst: Value,
        n: Value,
    ) -> Result<(), String> {
        match inst {
            Inst::Unary(u, a) => {
                let (Some(f), Src::Mem(from)) = (u.strip(), src(*a)?) else {
                    return Err("a strip function of a per-row value".into());
                };
                let fr = self.funcs[&Some(f)];
                self.b.ins().call(fr, &[from, dst, n]);
            }
            Inst::Binary(Binary::Pow, a, b) => {
                let (pa, sa) = self.as_memory(src(*a)?);
                let (pb, sb) = self.as_memory(src(*b)?);
                let fr = self.funcs[&None];
                self.b.ins().call(fr, &[pa, sa, pb, sb, dst, n]);
            }
            _ => return Err("not a strip function".into()),
        }
        Ok(())
    }

    /// A per-row instruction (scalar code).
    fn row_inst(
        &mut self,
        inst: &Inst,
        row_val: &[Option<Value>],
        row_ptr: &[Value],
    ) -> Result<Value, String> {
        let get = |v: usize| row_val[v].ok_or_else(|| format!("row value {v} is not ready"));
        Ok(match inst {
            Inst::Input(j) => match self.k.inputs[*j] {
                InputKind::Scalar => self.b.ins().load(self.ty, self.mf, row_ptr[*j], 0),
                InputKind::Row => return Err("a row input read as a scalar".into()),
            },
            Inst::Const(c) => self.fconst(*c),
            Inst::Unary(u, a) => {
                let x = get(*a)?;
                match u.strip() {
                    Some(f) => {
                        let (src, dst) = (
                            self.slot_addr(usize::MAX - 3, 16),
                            self.slot_addr(usize::MAX - 4, 16),
                        );
                        self.b.ins().store(self.mf, x, src, 0);
                        let one = self.b.ins().iconst(types::I64, 1);
                        let fr = self.funcs[&Some(f)];
                        self.b.ins().call(fr, &[src, dst, one]);
                        self.b.ins().load(self.ty, self.mf, dst, 0)
                    }
                    None => self.arith_unary(*u, x, false),
                }
            }
            Inst::Binary(op, a, b) => {
                let (x, y) = (get(*a)?, get(*b)?);
                match op {
                    Binary::Pow => {
                        let a = self.scalar_in_slot(x, usize::MAX - 1);
                        let b = self.scalar_in_slot(y, usize::MAX - 2);
                        let (pa, sa) = self.as_memory(a);
                        let (pb, sb) = self.as_memory(b);
                        let dst = self.slot_addr(usize::MAX - 4, 16);
                        let one = self.b.ins().iconst(types::I64, 1);
                        let fr = self.funcs[&None];
                        self.b.ins().call(fr, &[pa, sa, pb, sb, dst, one]);
                        self.b.ins().load(self.ty, self.mf, dst, 0)
                    }
                    _ => self.arith_binary(*op, x, y),
                }
            }
            Inst::Select(m, a, b) => {
                let (m, x, y) = (get(*m)?, get(*a)?, get(*b)?);
                let z = self.fconst(0.0);
                let c = self.b.ins().fcmp(FloatCC::NotEqual, m, z);
                self.b.ins().select(c, x, y)
            }
            Inst::Reduce(..) | Inst::RowFn(..) => {
                return Err("a reduction evaluated as a row value".into())
            }
        })
    }
}

/// The row functions whose operand is `v` and that finish with pass `p`.
fn row_fns_of(k: &Kernel, v: usize, p: usize, ready: &[usize]) -> Vec<usize> {
    (0..k.insts.len())
        .filter(|&r| matches!(k.insts[r], Inst::RowFn(_, a) if a == v) && ready[r] == p + 1)
        .collect()
}
