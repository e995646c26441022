// The VS Code client of `deqc lsp`: starts the server over stdio for .deq
// files. The binary is `deqc` on PATH unless the setting `deq.server.path`
// names another.
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("deq").get("server.path") || "deqc";
  const server = { command, args: ["lsp"], transport: TransportKind.stdio };
  client = new LanguageClient(
    "deq",
    "deqc language server",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "deq" }, { scheme: "untitled", language: "deq" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
