//! Constant folding of scalar elementwise ops whose operands are all
//! constants (`2.0 * 0.5`, `1.0 - 0.0`, the constant arithmetic VJP rules
//! build).
//!
//! Guarantees: the folded value is computed by the executor's own kernel (in
//! f64), so folding cannot disagree with execution; only float scalars are
//! folded; the new constant keeps the node's type and span.

use candle_core::{DType as CDType, Device};

use crate::exec::kernels::{self, KernelCtx};
use crate::exec::{DimEnv, ExecOptions};
use crate::ir::{Graph, IrError, Op};

use super::{fn_pass, for_each_body};

fn_pass!(ConstantFold, "fold", fold);

fn fold(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = for_each_body(g, &fold)?;
    let device = Device::Cpu;
    let dims = DimEnv::new();
    let options = ExecOptions::default();
    for id in g.topo_order() {
        let node = g.node(id);
        if !node.op.is_elementwise() || node.ty.rank() != 0 || !node.ty.dtype.is_float() {
            continue;
        }
        let operands = g.operands(id);
        let mut args = Vec::new();
        for o in &operands {
            match g.op(*o) {
                Op::Const(v) if g.ty(*o).rank() == 0 && g.ty(*o).dtype.is_float() => {
                    match kernels::scalar(*v, CDType::F64, &device) {
                        Ok(t) => args.push(t),
                        Err(_) => break,
                    }
                }
                _ => break,
            }
        }
        if args.len() != operands.len() {
            continue;
        }
        let refs: Vec<&candle_core::Tensor> = args.iter().collect();
        let ctx = KernelCtx {
            device: &device,
            dtype: CDType::F64,
            out_shape: &[],
            dims: &dims,
            span: None,
            options: &options,
            node_index: id.index(),
            out_order: None,
        };
        let Ok(t) = kernels::eval(&node.op, &refs, &ctx) else {
            continue;
        };
        let Ok(v) = t.to_scalar::<f64>() else {
            continue;
        };
        let ty = node.ty.clone();
        let span = g.span(id);
        let c = g.add(Op::Const(v), ty, &[], span);
        g.replace_uses(id, c);
        g.remove(id);
        changed = true;
    }
    Ok(changed)
}
