// Runs firmware/micropython/scenario.py under MicroPython's WebAssembly port and prints
// {"result": ..., "verify_misses": [...]} as JSON on stdout (tests/test_micropython_core.py).
//
// Usage: node firmware/micropython/run.mjs < input.json
// where input.json is {"inputs": ..., "verdicts": [[key_b64, message, signature_b64, bool], ...]}:
// the verdicts are CPython's (cryptography), because MicroPython has no Ed25519 (see scenario.py).
//
// The core's files are copied into MicroPython's virtual file system under their package
// path (/lib/firmware/agent/core/*.py, with the real firmware/ and firmware/agent/
// __init__.py), so `from firmware.agent.core import framing` works as on a device.
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const input = readFileSync(0, "utf8");

const errors = [];
const mp = await loadMicroPython({
  heapsize: 16 * 1024 * 1024,
  stdout: (line) => process.stderr.write(`micropython: ${line}\n`),
  stderr: (line) => errors.push(line),
});

const copy = (relative) => mp.FS.writeFile(join("/lib", relative), readFileSync(join(root, relative)));
mp.FS.mkdirTree("/lib/firmware/agent/core");
mp.FS.mkdirTree("/lib/firmware/micropython");
copy("firmware/__init__.py");
copy("firmware/agent/__init__.py");
for (const name of readdirSync(join(root, "firmware/agent/core")).filter((n) => n.endsWith(".py"))) {
  copy(join("firmware/agent/core", name));
}
mp.FS.writeFile("/lib/firmware/micropython/__init__.py", "");
copy("firmware/micropython/scenario.py");
mp.FS.writeFile("/input.json", input);

const driver = `
import json
from firmware.micropython import scenario

with open("/input.json") as f:
    given = json.load(f)
verdicts = {}
for key, message, signature, verdict in given["verdicts"]:
    verdicts[(key, message, signature)] = verdict
misses = []

def verify_ed25519(key_b64, message, signature_b64):
    # CPython's verdict for these exact bytes; anything it never saw does not verify.
    triple = (key_b64, message.decode(), signature_b64)
    if triple not in verdicts:
        misses.append(list(triple))
        return False
    return verdicts[triple]

result = scenario.run(given["inputs"], verify_ed25519)
with open("/output.json", "w") as f:
    json.dump({"result": result, "verify_misses": misses, "implementation": list(__import__("sys").implementation.version)}, f)
`;

try {
  mp.runPython(driver);
} catch (error) {
  process.stderr.write(`${error.message}\n${errors.join("\n")}\n`);
  process.exit(1);
}
process.stdout.write(mp.FS.readFile("/output.json", { encoding: "utf8" }));
process.stdout.write("\n");
