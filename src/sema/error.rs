//! The semantic checker's errors: one enum, one variant per error class.
//!
//! Guarantees: every variant has a `deq::sema::*` code, a label under the
//! offending span and, where one helps, a hint. Spans are byte ranges in the
//! file the diagnostic is filed under (see `diag::Diag`); a second place in
//! the same file ("declared here") is a second label.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum SemaError {
    #[error("unknown name `{name}`")]
    #[diagnostic(code(deq::sema::unknown_name))]
    UnknownName {
        name: String,
        #[label("not found in this scope")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("unknown module `{name}`")]
    #[diagnostic(code(deq::sema::unknown_module))]
    UnknownModule {
        name: String,
        #[label("no stdlib module of this name")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{module}` has no item `{name}`")]
    #[diagnostic(code(deq::sema::unknown_item))]
    UnknownItem {
        module: String,
        name: String,
        #[label("not defined in `{module}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("cannot read `{path}`: {reason}")]
    #[diagnostic(
        code(deq::sema::missing_file),
        help("paths in `use \"...\"` are relative to the folder of the importing file")
    )]
    MissingFile {
        path: String,
        reason: String,
        #[label("imported here")]
        span: SourceSpan,
    },

    #[error("import cycle: {cycle}")]
    #[diagnostic(
        code(deq::sema::import_cycle),
        help(
            "files may not import each other in a circle; move the shared items into a third file"
        )
    )]
    ImportCycle {
        cycle: String,
        #[label("this import closes the cycle")]
        span: SourceSpan,
    },

    #[error("`{name}` is defined more than once")]
    #[diagnostic(code(deq::sema::duplicate_definition))]
    Duplicate {
        name: String,
        #[label("defined again here")]
        span: SourceSpan,
        #[label("first defined here")]
        first: Option<SourceSpan>,
    },

    #[error("`{name}` calls itself: fn and layer definitions may not be recursive")]
    #[diagnostic(
        code(deq::sema::recursive_definition),
        help("fns and layers are inlined at every use, so recursion would never end; use an `equilibrium` or `unroll` for iteration")
    )]
    Recursive {
        name: String,
        #[label("recursive use")]
        span: SourceSpan,
    },

    #[error("`{name}` depends on itself")]
    #[diagnostic(code(deq::sema::const_cycle))]
    ConstCycle {
        name: String,
        #[label("used in its own definition")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code(deq::sema::not_constant))]
    NotConstant {
        message: String,
        #[label("must be known at compile time")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(deq::sema::type_mismatch))]
    TypeMismatch {
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{what} is not callable")]
    #[diagnostic(code(deq::sema::not_callable))]
    NotCallable {
        what: String,
        #[label("called here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{callee}` has no {kind} `{name}`")]
    #[diagnostic(code(deq::sema::unknown_argument))]
    UnknownArgument {
        callee: String,
        kind: String,
        name: String,
        #[label("unknown {kind}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("missing {kind} `{name}` for `{callee}`")]
    #[diagnostic(code(deq::sema::missing_argument))]
    MissingArgument {
        callee: String,
        kind: String,
        name: String,
        #[label("`{name}` is required here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{callee}` takes {expected} {kind}s, but {found} were given")]
    #[diagnostic(code(deq::sema::argument_count))]
    ArgumentCount {
        callee: String,
        kind: String,
        expected: String,
        found: usize,
        #[label("too many {kind}s")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{kind} `{name}` of `{callee}` is given twice")]
    #[diagnostic(code(deq::sema::duplicate_argument))]
    DuplicateArgument {
        callee: String,
        kind: String,
        name: String,
        #[label("given again here")]
        span: SourceSpan,
    },

    #[error("`{name}` of `{callee}` must be {expected}, found {found}")]
    #[diagnostic(code(deq::sema::argument_type))]
    ArgumentType {
        callee: String,
        name: String,
        expected: String,
        found: String,
        #[label("expected {expected}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("matmul of {lhs} and {rhs}: {detail}")]
    #[diagnostic(code(deq::sema::matmul_shape))]
    MatmulShape {
        lhs: String,
        rhs: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("shapes {lhs} and {rhs} cannot be broadcast together")]
    #[diagnostic(
        code(deq::sema::broadcast),
        help("broadcasting aligns dimensions from the right; each pair must be equal or one of them 1")
    )]
    Broadcast {
        lhs: String,
        rhs: String,
        #[label("{detail}")]
        span: SourceSpan,
        detail: String,
    },

    #[error("{op}: {detail}")]
    #[diagnostic(code(deq::sema::shape))]
    Shape {
        op: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{op}` needs {expected}, found {found}")]
    #[diagnostic(code(deq::sema::input_rank))]
    InputRank {
        op: String,
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: SourceSpan,
    },

    #[error("`{op}`: the kernel {kernel} is larger than the input {input}")]
    #[diagnostic(
        code(deq::sema::kernel_too_large),
        help("use a smaller kernel, or pad the input")
    )]
    KernelTooLarge {
        op: String,
        kernel: String,
        input: String,
        #[label("no window fits")]
        span: SourceSpan,
    },

    #[error(
        "`{op}`: {groups} groups do not divide the {inputs} input and {outputs} output channels"
    )]
    #[diagnostic(code(deq::sema::groups))]
    Groups {
        op: String,
        groups: i64,
        inputs: String,
        outputs: String,
        #[label("groups = {groups}")]
        span: SourceSpan,
    },

    #[error("`{op}`: the weight {weight} expects {expected} input channels per group, but the input {input} has {found}")]
    #[diagnostic(code(deq::sema::weight_channels))]
    WeightChannels {
        op: String,
        weight: String,
        expected: String,
        input: String,
        found: String,
        #[label("channels differ")]
        span: SourceSpan,
    },

    #[error("`{op}` needs {requirement}, found {found}")]
    #[diagnostic(code(deq::sema::bad_setting))]
    BadSetting {
        op: String,
        requirement: String,
        found: String,
        #[label("{found}")]
        span: SourceSpan,
    },

    #[error("axis {axis} is given twice")]
    #[diagnostic(code(deq::sema::repeated_axis))]
    RepeatedAxis {
        axis: usize,
        #[label("repeated axis")]
        span: SourceSpan,
    },

    #[error("{axes} is not a permutation of the {rank} axes of {ty}")]
    #[diagnostic(code(deq::sema::not_permutation))]
    NotPermutation {
        axes: String,
        rank: usize,
        ty: String,
        #[label("not a permutation")]
        span: SourceSpan,
    },

    #[error("`cast` needs an element type, found {found}")]
    #[diagnostic(
        code(deq::sema::unknown_dtype),
        help("element types are \"f32\", \"f64\" and \"i64\"")
    )]
    UnknownDType {
        found: String,
        #[label("not a dtype")]
        span: SourceSpan,
    },

    #[error("cannot concatenate {first} and {other} along axis {axis}: they differ elsewhere")]
    #[diagnostic(code(deq::sema::concat_shape))]
    ConcatShape {
        first: String,
        other: String,
        axis: usize,
        #[label("shapes differ outside axis {axis}")]
        span: SourceSpan,
    },

    #[error("split sizes {sizes} do not add up to dimension {axis} of {ty}, which is {dim}")]
    #[diagnostic(code(deq::sema::split_sizes))]
    SplitSizes {
        sizes: String,
        axis: usize,
        ty: String,
        dim: String,
        #[label("sizes must be positive and add up to {dim}")]
        span: SourceSpan,
    },

    #[error("cannot squeeze axis {axis} of {ty}: its size is {size}, not 1")]
    #[diagnostic(code(deq::sema::squeeze_size))]
    SqueezeSize {
        axis: usize,
        ty: String,
        size: String,
        #[label("size {size}")]
        span: SourceSpan,
    },

    #[error("at most one dimension of a reshape may be -1")]
    #[diagnostic(code(deq::sema::reshape_infer))]
    ReshapeInfer {
        #[label("several -1")]
        span: SourceSpan,
    },

    #[error("{dim} is not a valid reshape dimension: dimensions are positive, or -1 for the one inferred")]
    #[diagnostic(code(deq::sema::reshape_dim))]
    ReshapeDim {
        dim: String,
        #[label("bad dimension")]
        span: SourceSpan,
    },

    #[error("reshape of {from} ({from_count} elements) to {to} ({to_count} elements)")]
    #[diagnostic(code(deq::sema::reshape))]
    Reshape {
        from: String,
        to: String,
        from_count: String,
        to_count: String,
        #[label("element counts differ")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("axis {axis} is out of range for a tensor of rank {rank}")]
    #[diagnostic(
        code(deq::sema::axis_out_of_range),
        help("axes count from 0; negative axes count from the end (-1 is the last)")
    )]
    AxisOutOfRange {
        axis: i64,
        rank: usize,
        #[label("no axis {axis} here")]
        span: SourceSpan,
    },

    #[error("element types differ: {lhs} and {rhs}")]
    #[diagnostic(code(deq::sema::dtype_mismatch))]
    DTypeMismatch {
        lhs: String,
        rhs: String,
        #[label("mixes {lhs} and {rhs}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{what} does not match the declared type: expected {expected}, found {found}")]
    #[diagnostic(code(deq::sema::signature_mismatch))]
    Signature {
        what: String,
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: SourceSpan,
        #[label("declared as {expected} here")]
        declared: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error(
        "the body of equilibrium `{state}` has type {found}, but the state is declared {expected}"
    )]
    #[diagnostic(
        code(deq::sema::equilibrium_type),
        help("a fixed point z = f(z) needs f(z) to have exactly the state's type")
    )]
    EquilibriumType {
        state: String,
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: SourceSpan,
        #[label("state declared as {expected}")]
        declared: SourceSpan,
    },

    #[error("unknown {what} `{name}`")]
    #[diagnostic(code(deq::sema::unknown_option))]
    UnknownOption {
        what: String,
        name: String,
        #[label("unknown {what}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(deq::sema::invalid_value))]
    InvalidValue {
        message: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` is required in the train block of `{model}`")]
    #[diagnostic(code(deq::sema::missing_train_key))]
    MissingTrainKey {
        name: String,
        model: String,
        #[label("this train block has no `{name}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("the data of `{model}` does not fit the model: {detail}")]
    #[diagnostic(code(deq::sema::data_mismatch))]
    DataMismatch {
        model: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(deq::sema::invalid_statement))]
    InvalidStatement {
        message: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("parameter `{path}` is declared with two different types: {first} and {second}")]
    #[diagnostic(
        code(deq::sema::parameter_conflict),
        help("a parameter's shape may depend only on constants and hyper-parameters, so that every use of an instance shares one weight")
    )]
    ParameterConflict {
        path: String,
        first: String,
        second: String,
        #[label("declared {second} here")]
        span: SourceSpan,
    },

    #[error("integer arithmetic overflows or divides by zero")]
    #[diagnostic(code(deq::sema::arithmetic))]
    Arithmetic {
        #[label("here")]
        span: SourceSpan,
    },

    #[error("equilibrium state `{state}` is {dtype}: a fixed point is solved over floats")]
    #[diagnostic(
        code(deq::sema::integer_state),
        help("declare the state as a float tensor (`[B, 10]` is f32, or write `f64[B, 10]`); integer ids belong outside the equilibrium, e.g. through an embedding")
    )]
    IntegerState {
        state: String,
        dtype: String,
        #[label("declared {dtype} here")]
        span: SourceSpan,
    },

    #[error("`{division}` is not a whole number: the train block fixes {fixed}, and {num} / {den} leaves {rem}")]
    #[diagnostic(
        code(deq::sema::inexact_division),
        help("choose sizes that divide evenly (e.g. a `seq_len` that is a multiple of {den}), or reshape by a divisor of the fixed dimension")
    )]
    InexactDivision {
        division: String,
        fixed: String,
        num: i64,
        den: i64,
        rem: i64,
        #[label("this shape has `{division}`")]
        span: SourceSpan,
        /// The data setting, when it is in the same file as `span`.
        #[label("fixes {fixed}")]
        setting: Option<SourceSpan>,
    },

    #[error("`{op}` cannot differentiate {what}")]
    #[diagnostic(code(deq::sema::not_differentiable))]
    NotDifferentiable {
        op: String,
        what: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("the vector of `{op}` must be {expected}, found {found}")]
    #[diagnostic(code(deq::sema::product_vector))]
    ProductVector {
        op: String,
        expected: String,
        found: String,
        #[label("this is {found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` cannot be the loss: {detail}")]
    #[diagnostic(code(deq::sema::bad_loss))]
    BadLoss {
        name: String,
        detail: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        /// The `loss = ...` entry, when it is not where `span` is.
        #[label("given as the loss here")]
        used: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error("while checking `{path}`, repetition {} of {count}", index + 1)]
    #[diagnostic(code(deq::sema::in_repetition), severity(Advice))]
    InRepetition {
        path: String,
        index: usize,
        count: usize,
        #[label("the repeated element")]
        span: SourceSpan,
    },

    #[error("while checking `{name}` as the loss, called with {args}")]
    #[diagnostic(code(deq::sema::in_loss), severity(Advice))]
    InLoss {
        name: String,
        args: String,
        #[label("the loss")]
        span: SourceSpan,
    },

    #[error("`outputs` does not fit `{model}`: {detail}")]
    #[diagnostic(code(deq::sema::bad_outputs))]
    BadOutputs {
        model: String,
        detail: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` is never used")]
    #[diagnostic(code(deq::sema::unused), severity(Warning))]
    Unused {
        name: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
    },
}
