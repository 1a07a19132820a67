// Between the wire (keyhaven.v1 messages as lib/proto.js reads and writes
// them: snake_case fields, 64-bit integers as bigints, enums as names) and
// the JavaScript values of the public API (camelCase, numbers, Dates, plain
// objects). Only the shape is checked here; the rules themselves (lengths,
// characters, how many attributes) are the daemon's to apply, and its
// INVALID_ARGUMENT names the field.
'use strict';

const util = require('util');

const { InvalidArgumentError } = require('./errors');

const DEFAULT_TOKEN_TYPE = 'access_token';

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function text(value, what) {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${what} must be a string`);
  return value;
}

/** A CredentialKey for the wire from {provider, serverId, userId, tokenType}. */
function keyToWire(key) {
  if (!isPlainObject(key)) {
    throw new InvalidArgumentError('a key is an object {provider, serverId, userId, tokenType}');
  }
  return {
    provider: text(key.provider, 'key.provider'),
    server_id: key.serverId === undefined ? '' : text(key.serverId, 'key.serverId'),
    user_id: key.userId === undefined ? '' : text(key.userId, 'key.userId'),
    token_type: key.tokenType === undefined || key.tokenType === '' ? DEFAULT_TOKEN_TYPE : text(key.tokenType, 'key.tokenType'),
  };
}

function keyFromWire(key) {
  const k = key || {};
  return {
    provider: k.provider || '',
    serverId: k.server_id || '',
    userId: k.user_id || '',
    tokenType: k.token_type || DEFAULT_TOKEN_TYPE,
  };
}

/**
 * Attributes for the wire: an object of strings, without a prototype (so
 * that a name like "__proto__" is an attribute like any other).
 */
function attributesToWire(attributes, what = 'attributes') {
  if (!isPlainObject(attributes)) throw new InvalidArgumentError(`${what} must be an object of names to strings`);
  const out = Object.create(null);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value !== 'string') {
      throw new InvalidArgumentError(`${what}: the value of ${JSON.stringify(name)} must be a string`);
    }
    out[name] = value;
  }
  return out;
}

/** A plain object, names in order (a map on the wire has none). */
function attributesFromWire(attributes) {
  return Object.fromEntries(Object.entries(attributes || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function timestampToWire(value, what) {
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new InvalidArgumentError(`${what} must be a Date or milliseconds since the epoch`);
  }
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function timestampFromWire(ts) {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6));
}

/** A revision (number or bigint) as the wire's uint64, a bigint. */
function revisionToWire(value, what) {
  const ok =
    (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) ||
    (typeof value === 'bigint' && value >= 0n && value < 2n ** 64n);
  if (!ok) throw new InvalidArgumentError(`${what} must be a whole number of at least 0`);
  return BigInt(value);
}

/** uint64 from the wire as a number: exact up to 2^53, far past any revision. */
function uint(value) {
  return Number(value || 0);
}

function metadataFromWire(m) {
  if (!m) return null;
  return {
    key: keyFromWire(m.key),
    revision: uint(m.revision),
    createdAt: timestampFromWire(m.created_at),
    updatedAt: timestampFromWire(m.updated_at),
    expiresAt: timestampFromWire(m.expires_at),
    // proto3 `optional`: undefined when absent, so '' is a label.
    label: m.label === undefined ? null : m.label,
    attributes: attributesFromWire(m.attributes),
  };
}

/**
 * A credential read from the daemon: its metadata and the secret bytes.
 * The secret is not enumerable and is redacted from util.inspect (so from
 * console.log), JSON.stringify and String().
 */
class Credential {
  constructor(metadata, secret) {
    this.metadata = metadata;
    Object.defineProperty(this, 'secret', { value: secret, enumerable: false });
  }

  toJSON() {
    return { metadata: this.metadata, secret: '[REDACTED]' };
  }

  toString() {
    return `Credential(${formatKey(this.metadata.key)}, secret [REDACTED])`;
  }

  [util.inspect.custom](depth, options, inspect = util.inspect) {
    if (depth < 0) return '[Credential]';
    const shown = inspect(this.toJSON(), { ...options, depth: options.depth === null ? null : options.depth - 1 });
    return `Credential ${shown}`;
  }
}

const EVENT_KINDS = new Set(['STORED', 'UPDATED', 'DELETED', 'EXPIRED', 'SNAPSHOT', 'SYNCED', 'LAGGED']);

function eventFromWire(event) {
  const kind = String(event.kind).replace(/^EVENT_KIND_/, '');
  const a = event.actor;
  return {
    kind: EVENT_KINDS.has(kind) ? kind : 'UNKNOWN',
    metadata: metadataFromWire(event.metadata),
    time: timestampFromWire(event.time),
    actor: a ? { uid: a.uid, pid: a.pid, executable: a.executable, appId: a.app_id } : null,
    missed: uint(event.missed),
  };
}

function statusFromWire(s) {
  return {
    version: s.version,
    protocol: s.protocol,
    pid: s.pid,
    storePath: s.store_path,
    keyTier: s.key_tier,
    keySource: s.key_source,
    credentialCount: uint(s.credential_count),
    uptimeSeconds: uint(s.uptime_seconds),
    keyProblem: s.key_problem,
    keyId: s.key_id,
    policy: s.policy,
  };
}

function escapeField(field) {
  return field.replace(/%/g, '%25').replace(/:/g, '%3A');
}

/** The text form provider::server_id::user_id::token_type. */
function formatKey(key) {
  const k = keyFromWire(keyToWire(key));
  return [k.provider, k.serverId, k.userId, k.tokenType].map(escapeField).join('::');
}

/** Parses the text form; the token type may be left out. */
function parseKey(textForm) {
  text(textForm, 'a key in text form');
  const fields = textForm.split('::');
  if (fields.length < 3 || fields.length > 4) {
    throw new InvalidArgumentError('a key in text form is provider::server_id::user_id[::token_type]');
  }
  const [provider, serverId, userId, tokenType = DEFAULT_TOKEN_TYPE] = fields.map((f) =>
    f.replace(/%(25|3A)/gi, (_, code) => (code === '25' ? '%' : ':')),
  );
  return { provider, serverId, userId, tokenType };
}

module.exports = {
  Credential,
  attributesToWire,
  eventFromWire,
  formatKey,
  keyToWire,
  metadataFromWire,
  parseKey,
  revisionToWire,
  statusFromWire,
  timestampToWire,
};
