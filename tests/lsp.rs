//! `deqc lsp` spoken to over JSON-RPC, as an editor would: diagnostics,
//! hover, definition, symbols, completion, and a fuzzed edit session.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

mod mutate;

/// A client of one `deqc lsp` process.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    /// Notifications received while waiting for responses.
    notes: Vec<Value>,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_deqc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("deqc lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut c = Client {
            child,
            stdin,
            stdout,
            next_id: 1,
            notes: Vec::new(),
        };
        let init = c.request(
            "initialize",
            json!({ "processId": null, "rootUri": null, "capabilities": {} }),
        );
        assert!(init["capabilities"]["hoverProvider"]
            .as_bool()
            .unwrap_or(false));
        c.notify("initialized", json!({}));
        c
    }

    fn send(&mut self, msg: &Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn read(&mut self) -> Value {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read header");
            assert!(n > 0, "the server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.parse().expect("length");
            }
        }
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body).expect("read body");
        serde_json::from_slice(&body).expect("json")
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Send a request and return its result (panics on an error response).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let reply = self.request_raw(method, params);
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    fn request_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let msg = self.read();
            if msg.get("id") == Some(&json!(id)) {
                return msg;
            }
            self.notes.push(msg);
        }
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        loop {
            if let Some(i) = self.notes.iter().position(|n| {
                n["method"] == "textDocument/publishDiagnostics" && n["params"]["uri"] == uri
            }) {
                let n = self.notes.remove(i);
                return n["params"]["diagnostics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
            let msg = self.read();
            self.notes.push(msg);
        }
    }

    fn open(&mut self, uri: &str, text: &str) -> Vec<Value> {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "deq", "version": 1, "text": text } }),
        );
        self.diagnostics(uri)
    }

    fn at(&mut self, method: &str, uri: &str, line: usize, character: usize) -> Value {
        self.request(
            method,
            json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character } }),
        )
    }

    /// shutdown + exit; the process must end with status 0.
    fn finish(mut self) {
        let r = self.request("shutdown", Value::Null);
        assert!(r.is_null());
        self.notify("exit", Value::Null);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "deqc lsp exited with {status}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deqc-lsp-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn uri_of(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Line and column (0-based) of the `nth` occurrence of `needle`.
fn find(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let at = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"))
        .0;
    let line = text[..at].matches('\n').count();
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1);
    (line, col)
}

const MLP: &str = include_str!("../examples/mnist_mlp.deq");

#[test]
fn diagnostics_are_those_of_deqc_check_with_exact_ranges() {
    let dir = scratch("diag");
    let path = dir.join("bad.deq");
    let text = "use nn;\n\nmodel M(x: [B, 4]) -> [B, 4] {\n    let h = tanhh(x);\n    h\n}\n";
    std::fs::write(&path, text).expect("write");
    let uri = uri_of(&path);
    let mut c = Client::start();
    let diags = c.open(&uri, text);
    assert_eq!(diags.len(), 1, "{diags:?}");
    let d = &diags[0];
    let (line, col) = find(text, "tanhh", 0);
    assert_eq!(
        d["range"]["start"],
        json!({ "line": line, "character": col })
    );
    assert_eq!(
        d["range"]["end"],
        json!({ "line": line, "character": col + 5 })
    );
    assert_eq!(d["severity"], 1);
    assert_eq!(d["code"], "deq::sema::unknown_name");
    let message = d["message"].as_str().expect("message");
    assert!(message.contains("did you mean `tanh`?"), "{message}");

    // The same text as `deqc check` prints (which wraps lines at 100 columns).
    let out = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["check", path.to_str().expect("utf-8 path")])
        .output()
        .expect("deqc check");
    let rendered = String::from_utf8_lossy(&out.stderr);
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (headline, help) = message.split_once("\nhelp: ").expect("a help line");
    assert!(words(&rendered).contains(&words(headline)), "{rendered}");
    assert!(words(&rendered).contains(&words(help)), "{rendered}");

    // Fixing it (a ranged edit) clears the diagnostics.
    c.notify(
        "textDocument/didChange",
        json!({
            "textDocument": { "uri": uri, "version": 2 },
            "contentChanges": [{
                "range": { "start": { "line": line, "character": col },
                           "end": { "line": line, "character": col + 5 } },
                "text": "tanh"
            }]
        }),
    );
    assert_eq!(c.diagnostics(&uri), Vec::<Value>::new());

    // A syntax error: the range is where the parser stopped.
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 3 },
                "contentChanges": [{ "text": "model M(x: [B, 4]) {\n    x +\n}\n" }] }),
    );
    let diags = c.diagnostics(&uri);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0]["range"]["start"]["line"], 2, "{diags:?}");
    c.finish();
}

/// Every UI test program: the server publishes as many diagnostics as
/// `deqc check` prints, with the same headline and help text, and the first
/// one on the line its `//~` marker names.
#[test]
fn every_ui_program_gets_the_diagnostics_of_deqc_check() {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/ui")
        .expect("tests/ui")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deq"))
        .collect();
    files.sort();
    assert!(files.len() > 40);
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut c = Client::start();
    for path in &files {
        let path = std::fs::canonicalize(path).expect("path");
        let text = std::fs::read_to_string(&path).expect("read");
        let uri = uri_of(&path);
        let diags = c.open(&uri, &text);
        let out = Command::new(env!("CARGO_BIN_EXE_deqc"))
            .args(["check", path.to_str().expect("utf-8 path")])
            .output()
            .expect("deqc check");
        // Wrapped headlines continue after a `│`.
        let rendered = words(&String::from_utf8_lossy(&out.stderr).replace('│', " "));
        let printed = rendered.matches(" × ").count() + rendered.matches(" ⚠ ").count();
        assert_eq!(
            diags.len(),
            printed,
            "{}: {diags:?}\n{rendered}",
            path.display()
        );
        for d in &diags {
            let message = d["message"].as_str().expect("message");
            let message = message
                .split_once(": ")
                .filter(|_| message.starts_with("in "))
                .map_or(message, |(_, rest)| rest);
            let (headline, help) = message.split_once("\nhelp: ").unwrap_or((message, ""));
            assert!(
                rendered.contains(&words(headline)),
                "{}: {headline}",
                path.display()
            );
            assert!(
                rendered.contains(&words(help)),
                "{}: {help}",
                path.display()
            );
        }
        let first = &diags[0];
        let in_root = !first["message"].as_str().unwrap_or("").starts_with("in ");
        let marked = text.lines().position(|l| l.contains("//~"));
        if in_root && marked.is_some() {
            assert_eq!(
                first["range"]["start"]["line"].as_u64().map(|l| l as usize),
                marked,
                "{}: {first}",
                path.display()
            );
        }
        c.notify(
            "textDocument/didClose",
            json!({ "textDocument": { "uri": uri } }),
        );
        assert_eq!(c.diagnostics(&uri), Vec::<Value>::new());
    }
    c.finish();
}

#[test]
fn hover_shows_shapes_signatures_and_documentation() {
    let dir = scratch("hover");
    let path = dir.join("mlp.deq");
    std::fs::write(&path, MLP).expect("write");
    let uri = uri_of(&path);
    let mut c = Client::start();
    assert_eq!(c.open(&uri, MLP), Vec::<Value>::new());
    let hover_text = |c: &mut Client, needle: &str, nth: usize| {
        let (l, col) = find(MLP, needle, nth);
        let h = c.at("textDocument/hover", &uri, l, col + 1);
        h["contents"]["value"].as_str().unwrap_or("").to_string()
    };
    // A let: its symbolic shape.
    let u = hover_text(&mut c, "u = inject", 0);
    assert!(u.contains("let u: [B, 256]"), "{u}");
    // The equilibrium state, where it is declared and where it is used.
    assert!(hover_text(&mut c, "z: [B, 256]", 0).contains("equilibrium state z: [B, 256]"));
    let z_use = {
        let (l, col) = find(MLP, "head(z)", 0);
        c.at("textDocument/hover", &uri, l, col + 5)["contents"]["value"].clone()
    };
    assert!(z_use.as_str().unwrap_or("").contains("[B, 256]"), "{z_use}");
    // An input.
    assert!(hover_text(&mut c, "x: [B, 784]", 0).contains("input x: [B, 784]"));
    // An instance.
    assert!(hover_text(&mut c, "head =", 0).contains("instance `head` of layer `Linear`"));
    // A layer of the stdlib: signature and its doc comment.
    let (l, col) = find(MLP, "Linear", 0);
    let lin = c.at("textDocument/hover", &uri, l, col + 2)["contents"]["value"].clone();
    let lin = lin.as_str().unwrap_or("");
    assert!(
        lin.contains("layer Linear[i: int, o: int, bias: bool = true, norm = \"none\", coeff: float = 1.0](x: [*, i]) -> [*, o]"),
        "{lin}"
    );
    assert!(lin.contains("y = x @ w + b"), "{lin}");
    // A built-in and a solver.
    assert!(hover_text(&mut c, "tanh", 0).contains("hyperbolic tangent"));
    let anderson = hover_text(&mut c, "anderson", 0);
    assert!(anderson.contains("anderson(m = 5"), "{anderson}");
    assert!(anderson.contains("Anderson acceleration"), "{anderson}");
    assert!(hover_text(&mut c, "implicit", 0).contains("backward mode"));
    // Keys: a `with` option and a solver's argument.
    assert!(hover_text(&mut c, "solver", 0).contains("forward solver"));
    let m = hover_text(&mut c, "m = 5", 0);
    assert_eq!(m, "`m` of `anderson`: a positive int (default 5)");
    c.finish();
}

#[test]
fn hover_lists_one_shape_per_call_site_of_a_layer() {
    let uri = "untitled:sites.deq";
    let text = "layer Twice[d: int](x: [B, d]) -> [B, 2 * d] {\n    let y = concat((x, x), axis = 1);\n    y\n}\n\nmodel M(x: [B, 3]) -> [B, 20] {\n    let a = Twice[3];\n    let b = Twice[6];\n    let h = b(a(x));\n    concat((h, h[:, 0:8]), axis = 1)\n}\n";
    let mut c = Client::start();
    assert_eq!(c.open(uri, text), Vec::<Value>::new());
    let (l, col) = find(text, "y = concat", 0);
    let h = c.at("textDocument/hover", uri, l, col);
    let h = h["contents"]["value"].as_str().unwrap_or("");
    assert!(h.contains("- `[B, 6]`") && h.contains("- `[B, 12]`"), "{h}");
    let (l, col) = find(text, "h = b", 0);
    let h = c.at("textDocument/hover", uri, l, col);
    assert!(h["contents"]["value"]
        .as_str()
        .unwrap_or("")
        .contains("let h: [B, 12]"));
    c.finish();
}

#[test]
fn definitions_and_symbols_reach_into_modules_and_the_stdlib() {
    let dir = scratch("def");
    let lib = "// Shared blocks.\nlayer Cell[d: int](z: [B, d], u: [B, d]) -> [B, d] {\n    let lin = nn::Linear[d, d];\n    tanh(lin(z) + u)\n}\nuse nn;\n";
    std::fs::write(dir.join("blocks.deq"), lib).expect("write");
    let text = "use nn;\nuse \"blocks.deq\";\n\nconst D = 16;\n\nmodel M(x: [B, D]) -> [B, D] {\n    let cell = blocks::Cell[D];\n    let inject = nn::Linear[D, D];\n    let u = inject(x);\n    equilibrium z: [B, D] = cell(z, u);\n    z\n}\n";
    let path = dir.join("main.deq");
    std::fs::write(&path, text).expect("write");
    let uri = uri_of(&path);
    let mut c = Client::start();
    assert_eq!(c.open(&uri, text), Vec::<Value>::new());

    // Into the stdlib: a file holding the embedded nn.deq.
    let (l, col) = find(text, "Linear", 0);
    let def = c.at("textDocument/definition", &uri, l, col + 1);
    let target = def["uri"].as_str().expect("a location");
    assert!(
        target.starts_with("file://") && target.ends_with("/nn.deq"),
        "{def}"
    );
    let on_disk =
        std::fs::read_to_string(target.trim_start_matches("file://")).expect("stdlib file");
    let (want_line, want_col) = find(&on_disk, "Linear[", 0);
    assert_eq!(
        def["range"]["start"],
        json!({ "line": want_line, "character": want_col })
    );

    // Into a `use`d file.
    let (l, col) = find(text, "Cell", 0);
    let def = c.at("textDocument/definition", &uri, l, col + 1);
    assert!(
        def["uri"].as_str().unwrap_or("").ends_with("/blocks.deq"),
        "{def}"
    );
    assert_eq!(def["range"]["start"], json!({ "line": 1, "character": 6 }));

    // A local and a const.
    let (l, col) = find(text, "u)", 0);
    let def = c.at("textDocument/definition", &uri, l, col);
    assert_eq!(def["uri"], json!(uri));
    assert_eq!(def["range"]["start"], json!({ "line": 8, "character": 8 }));
    let (l, col) = find(text, "D]", 0);
    let def = c.at("textDocument/definition", &uri, l, col);
    assert_eq!(def["range"]["start"], json!({ "line": 3, "character": 6 }));

    // The outline: items, with instances and states inside the model.
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri } }),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["D", "M"]);
    let children: Vec<(&str, &str)> = symbols[1]["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or(""),
                s["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        children,
        [
            ("cell", "instance of blocks::Cell"),
            ("inject", "instance of nn::Linear"),
            ("z", "equilibrium state")
        ]
    );
    c.finish();
}

fn labels(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("completion items")
        .iter()
        .filter_map(|i| i["label"].as_str().map(String::from))
        .collect()
}

#[test]
fn completion_offers_builtins_layers_and_solver_arguments() {
    let uri = "untitled:complete.deq";
    let text = "use nn;\n\nlayer Cell[d: int](z: [B, d]) -> [B, d] {\n    z\n}\n\nmodel M(x: [B, 8]) -> [B, 8] {\n    let l = nn::\n    let u = x;\n    equilibrium z: [B, 8] = tanh(z + u) with solver = anderson(m = 5, ), backward = ;\n    z\n}\n";
    let mut c = Client::start();
    // The names come from the last version that parsed, since a half-typed
    // line (`nn::`) does not.
    let valid = text
        .replace("    let l = nn::\n", "")
        .replace("backward = ;", "backward = jfb;");
    assert_eq!(c.open(uri, &valid), Vec::<Value>::new());
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 2 }, "contentChanges": [{ "text": text }] }),
    );
    assert!(!c.diagnostics(uri).is_empty());
    // After `nn::`: the stdlib's layers.
    let (l, col) = find(text, "nn::", 0);
    let items = labels(&c.at("textDocument/completion", uri, l, col + 4));
    for want in ["Linear", "Conv2d", "LayerNorm", "Mlp"] {
        assert!(items.iter().any(|i| i == want), "{want} not in {items:?}");
    }
    assert!(!items.iter().any(|i| i == "tanh"));
    // In a body: locals, layers in scope, built-ins, keywords.
    let (l, col) = find(text, "    let u = x;", 0);
    let items = labels(&c.at("textDocument/completion", uri, l, col + 12));
    for want in [
        "x",
        "Cell",
        "nn",
        "tanh",
        "softmax",
        "conv2d",
        "equilibrium",
    ] {
        assert!(items.iter().any(|i| i == want), "{want} not in {items:?}");
    }
    // Inside anderson(...): its arguments.
    let (l, col) = find(text, "m = 5, ", 0);
    let items = labels(&c.at("textDocument/completion", uri, l, col + 7));
    assert_eq!(items, ["m", "beta", "lam", "tol", "max_iter", "stop"]);
    // After `backward =`: the backward modes.
    let (l, col) = find(text, "backward = ", 0);
    let items = labels(&c.at("textDocument/completion", uri, l, col + 11));
    assert_eq!(items, ["implicit", "phantom", "jfb", "unrolled"]);
    // After `solver =`: the solvers.
    let (l, col) = find(text, "solver = ", 0);
    let items = labels(&c.at("textDocument/completion", uri, l, col + 9));
    assert_eq!(items, ["fixed_point", "anderson", "broyden", "unroll"]);
    c.finish();
}

/// The front-end fuzzer's mutated programs, sent as whole-text and ranged
/// edits, each followed by hover, definition, completion and symbols at
/// random places: the server answers every request and exits cleanly.
#[test]
fn fuzzed_edit_session_never_kills_the_server() {
    let uri = "untitled:fuzz.deq";
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut c = Client::start();
    c.open(uri, mutate::SEEDS[0]);
    let mut text = mutate::SEEDS[0].to_string();
    for round in 0..150 {
        let seed = mutate::SEEDS[rng.random_range(0..mutate::SEEDS.len())];
        let n = rng.random_range(1..6);
        let edits: Vec<mutate::Edit> = (0..n)
            .map(|_| {
                let (a, b) = (rng.random::<u32>() as usize, rng.random::<u32>() as usize);
                match rng.random_range(0..3) {
                    0 => mutate::Edit::Delete(a, b),
                    1 => mutate::Edit::Insert(a, b),
                    _ => mutate::Edit::Swap(a, b),
                }
            })
            .collect();
        let change = if round % 2 == 0 {
            text = mutate::apply(seed, &edits);
            json!({ "text": text })
        } else {
            // A ranged edit at random (possibly out-of-range) positions.
            let token = mutate::TOKENS[rng.random_range(0..mutate::TOKENS.len())];
            let line = rng.random_range(0..40u32);
            let ch = rng.random_range(0..90u32);
            json!({ "range": { "start": { "line": line, "character": ch },
                                "end": { "line": line + rng.random_range(0..3u32), "character": rng.random_range(0..90u32) } },
                    "text": token })
        };
        c.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": round + 2 }, "contentChanges": [change] }),
        );
        c.diagnostics(uri);
        for method in [
            "textDocument/hover",
            "textDocument/definition",
            "textDocument/completion",
        ] {
            let line = rng.random_range(0..45);
            let ch = rng.random_range(0..100);
            let reply = c.request_raw(
                method,
                json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": ch } }),
            );
            assert!(
                reply.get("error").is_none(),
                "{method} failed on:\n{text}\n{reply}"
            );
        }
        let reply = c.request_raw(
            "textDocument/documentSymbol",
            json!({ "textDocument": { "uri": uri } }),
        );
        assert!(
            reply.get("error").is_none(),
            "symbols failed on:\n{text}\n{reply}"
        );
    }
    // Still alive and correct on a valid file.
    c.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 1000 }, "contentChanges": [{ "text": MLP }] }),
    );
    assert_eq!(c.diagnostics(uri), Vec::<Value>::new());
    let (l, col) = find(MLP, "u = inject", 0);
    let h = c.at("textDocument/hover", uri, l, col);
    assert!(h["contents"]["value"]
        .as_str()
        .unwrap_or("")
        .contains("[B, 256]"));
    c.finish();
}
