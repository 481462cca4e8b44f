// Makes an ES384 participant token with Node's own crypto (OpenSSL underneath), independent
// of stagefan-core, and writes it with its keys to node-es384.json. Run once:
//   node core/tests/token-fixtures/make-node-token.mjs > core/tests/token-fixtures/node-es384.json
// Also: `node make-node-token.mjs --verify <public.pem> <token>` exits 0 iff the token verifies.
import crypto from "node:crypto";
import fs from "node:fs";

const b64url = (buf) => Buffer.from(buf).toString("base64url");

if (process.argv[2] === "--verify") {
  const pub = crypto.createPublicKey(fs.readFileSync(process.argv[3], "utf8"));
  const [h, c, s] = process.argv[4].split(".");
  const ok = crypto.verify("sha384", Buffer.from(`${h}.${c}`), { key: pub, dsaEncoding: "ieee-p1363" },
    Buffer.from(s, "base64url"));
  const header = JSON.parse(Buffer.from(h, "base64url"));
  process.stdout.write(JSON.stringify({ ok, header, claims: JSON.parse(Buffer.from(c, "base64url")) }) + "\n");
  process.exit(ok && header.alg === "ES384" ? 0 : 1);
}

const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "secp384r1" });
const iat = 1764158400; // 2025-11-26T12:00:00Z
const header = { alg: "ES384", typ: "JWT", kid: "arn:aws:ivs:us-east-1:123456789012:public-key/NodeKey12345" };
const claims = {
  exp: iat + 12 * 3600, iat, jti: "nodeParticip",
  user_id: "node-user", resource: "arn:aws:ivs:us-east-1:123456789012:stage/NodeStage123",
  topic: "NodeStage123", events_url: "ws://127.0.0.1:8790/events", whip_url: "http://127.0.0.1:8790/whip",
  capabilities: { allow_publish: true, allow_subscribe: true }, attributes: { role: "host" }, version: "1.0",
};
const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
const sig = crypto.sign("sha384", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
process.stdout.write(JSON.stringify({
  generator: `node ${process.version} crypto.sign(sha384, ieee-p1363)`,
  private_key_pkcs8_pem: privateKey.export({ type: "pkcs8", format: "pem" }),
  public_key_spki_pem: publicKey.export({ type: "spki", format: "pem" }),
  now: iat + 60,
  token: `${input}.${b64url(sig)}`,
}, null, 2) + "\n");
