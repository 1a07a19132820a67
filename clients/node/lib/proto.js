// The protobuf codec for the keyhaven.v1 messages this package sends and
// reads, written out by hand so that the package needs nothing but Node.
//
// SCHEMA below is the part of proto/keyhaven/v1/keyhaven.proto this package
// speaks, field by field (name, number, type, presence). test/proto.test.js
// checks it against that file (every message listed here must have exactly
// the fields of the .proto) and round-trips every message through protobufjs.
//
// Decoded messages are plain objects with the .proto's snake_case names and
// proto3 defaults filled in: '' for strings, 0 for 32-bit integers, 0n (a
// bigint) for 64-bit ones, false, an empty Buffer for bytes, the name of
// value 0 for enums, null for an absent message, [] and a null-prototype
// object for repeated fields and maps. A proto3 `optional` field that is
// absent is left out (undefined), so absent and '' differ. An enum number
// this schema does not know is kept as a number. Bytes fields are views
// into the decoded buffer.
//
// Unknown fields of every wire type are skipped, so a newer daemon's
// additions do not break this client; truncated or malformed input is
// refused with a ProtoError.
'use strict';

const TIMESTAMP = 'google.protobuf.Timestamp';

// Each field: [name, number, type, rule]. type is a scalar type name, an
// enum or a message of SCHEMA. rule is '' (singular; proto3 implicit
// presence, or a message), 'optional' (proto3 explicit presence),
// 'repeated', or 'map' (map<string, type>).
const SCHEMA = {
  messages: {
    [TIMESTAMP]: [
      ['seconds', 1, 'int64', ''],
      ['nanos', 2, 'int32', ''],
    ],
    CredentialKey: [
      ['provider', 1, 'string', ''],
      ['server_id', 2, 'string', ''],
      ['user_id', 3, 'string', ''],
      ['token_type', 4, 'string', ''],
    ],
    CredentialMetadata: [
      ['key', 1, 'CredentialKey', ''],
      ['revision', 2, 'uint64', ''],
      ['created_at', 3, TIMESTAMP, ''],
      ['updated_at', 4, TIMESTAMP, ''],
      ['expires_at', 5, TIMESTAMP, ''],
      ['label', 6, 'string', 'optional'],
      ['attributes', 7, 'string', 'map'],
    ],
    StoreRequest: [
      ['key', 1, 'CredentialKey', ''],
      ['secret', 2, 'bytes', ''],
      ['label', 3, 'string', 'optional'],
      ['expires_at', 4, TIMESTAMP, ''],
      ['expected_revision', 5, 'uint64', 'optional'],
      ['attributes', 6, 'string', 'map'],
      ['clear_attributes', 7, 'bool', ''],
    ],
    StoreResponse: [
      ['metadata', 1, 'CredentialMetadata', ''],
      ['created', 2, 'bool', ''],
    ],
    RetrieveRequest: [['key', 1, 'CredentialKey', '']],
    RetrieveResponse: [
      ['metadata', 1, 'CredentialMetadata', ''],
      ['secret', 2, 'bytes', ''],
    ],
    DeleteRequest: [
      ['key', 1, 'CredentialKey', ''],
      ['expected_revision', 2, 'uint64', 'optional'],
    ],
    DeleteResponse: [['metadata', 1, 'CredentialMetadata', '']],
    ListRequest: [
      ['provider', 1, 'string', ''],
      ['server_id', 2, 'string', ''],
      ['user_id', 3, 'string', ''],
      ['page_size', 4, 'uint32', ''],
      ['page_token', 5, 'string', ''],
      ['match_empty_server_id', 6, 'bool', ''],
      ['match_empty_user_id', 7, 'bool', ''],
      ['attributes', 8, 'string', 'map'],
    ],
    ListResponse: [
      ['credentials', 1, 'CredentialMetadata', 'repeated'],
      ['next_page_token', 2, 'string', ''],
    ],
    CallerIdentity: [
      ['uid', 1, 'uint32', ''],
      ['pid', 2, 'int32', ''],
      ['executable', 3, 'string', ''],
      ['app_id', 4, 'string', ''],
    ],
    WatchRequest: [
      ['provider', 1, 'string', ''],
      ['server_id', 2, 'string', ''],
      ['user_id', 3, 'string', ''],
      ['match_empty_server_id', 4, 'bool', ''],
      ['match_empty_user_id', 5, 'bool', ''],
      ['snapshot', 6, 'bool', ''],
      ['attributes', 7, 'string', 'map'],
    ],
    WatchEvent: [
      ['kind', 1, 'EventKind', ''],
      ['metadata', 2, 'CredentialMetadata', ''],
      ['time', 3, TIMESTAMP, ''],
      ['actor', 4, 'CallerIdentity', ''],
      ['missed', 5, 'uint64', ''],
    ],
    LogoutRequest: [
      ['provider', 1, 'string', ''],
      ['server_id', 2, 'string', ''],
      ['user_id', 3, 'string', 'optional'],
    ],
    LogoutResponse: [['deleted', 1, 'CredentialMetadata', 'repeated']],
    StatusRequest: [],
    StatusResponse: [
      ['version', 1, 'string', ''],
      ['protocol', 2, 'uint32', ''],
      ['pid', 3, 'uint32', ''],
      ['store_path', 4, 'string', ''],
      ['key_tier', 5, 'string', ''],
      ['key_source', 6, 'string', ''],
      ['credential_count', 7, 'uint64', ''],
      ['uptime_seconds', 8, 'uint64', ''],
      ['key_problem', 9, 'string', ''],
      ['key_tiers', 10, 'KeyTierState', 'repeated'],
      ['key_id', 11, 'string', ''],
      ['policy', 12, 'string', ''],
      ['last_backup_at', 13, TIMESTAMP, ''],
      ['last_backup', 14, 'string', ''],
    ],
    KeyTierState: [
      ['tier', 1, 'string', ''],
      ['state', 2, 'string', ''],
      ['detail', 3, 'string', ''],
    ],
  },
  enums: {
    EventKind: {
      EVENT_KIND_UNSPECIFIED: 0,
      EVENT_KIND_STORED: 1,
      EVENT_KIND_UPDATED: 2,
      EVENT_KIND_DELETED: 3,
      EVENT_KIND_EXPIRED: 4,
      EVENT_KIND_SNAPSHOT: 5,
      EVENT_KIND_SYNCED: 6,
      EVENT_KIND_LAGGED: 7,
    },
  },
  // The calls this package makes: gRPC path /keyhaven.v1.<service>/<method>.
  methods: {
    Status: { service: 'Daemon', request: 'StatusRequest', response: 'StatusResponse', serverStreaming: false },
    Store: { service: 'Credentials', request: 'StoreRequest', response: 'StoreResponse', serverStreaming: false },
    Retrieve: { service: 'Credentials', request: 'RetrieveRequest', response: 'RetrieveResponse', serverStreaming: false },
    Delete: { service: 'Credentials', request: 'DeleteRequest', response: 'DeleteResponse', serverStreaming: false },
    List: { service: 'Credentials', request: 'ListRequest', response: 'ListResponse', serverStreaming: false },
    Watch: { service: 'Credentials', request: 'WatchRequest', response: 'WatchEvent', serverStreaming: true },
    Logout: { service: 'Credentials', request: 'LogoutRequest', response: 'LogoutResponse', serverStreaming: false },
  },
};

const PACKAGE = 'keyhaven.v1';

/** The gRPC path of a method of SCHEMA.methods. */
function methodPath(method) {
  const m = SCHEMA.methods[method];
  if (!m) throw new Error(`unknown method ${method}`);
  return `/${PACKAGE}.${m.service}/${method}`;
}

/** Input this codec cannot encode, or bytes it cannot decode. */
class ProtoError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtoError';
  }
}

// Wire types.
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

const SCALARS = {
  string: { wire: LEN, zero: () => '' },
  bytes: { wire: LEN, zero: () => Buffer.alloc(0) },
  bool: { wire: VARINT, zero: () => false },
  uint32: { wire: VARINT, zero: () => 0 },
  int32: { wire: VARINT, zero: () => 0 },
  uint64: { wire: VARINT, zero: () => 0n },
  int64: { wire: VARINT, zero: () => 0n },
};

const MAX_DEPTH = 64;
const TWO_32 = 2 ** 32;

// The schema compiled: per message, its fields by name (in order) and by number.
const TYPES = new Map();

function compile() {
  const enumNames = new Map();
  for (const [name, values] of Object.entries(SCHEMA.enums)) {
    enumNames.set(name, new Map(Object.entries(values).map(([k, v]) => [v, k])));
  }
  for (const [typeName, fields] of Object.entries(SCHEMA.messages)) {
    const type = { name: typeName, fields: [], byNumber: new Map() };
    TYPES.set(typeName, type);
    for (const [name, number, fieldType, rule] of fields) {
      let kind;
      if (SCALARS[fieldType]) kind = 'scalar';
      else if (enumNames.has(fieldType)) kind = 'enum';
      else if (SCHEMA.messages[fieldType]) kind = 'message';
      else throw new Error(`lib/proto.js: ${typeName}.${name} has unknown type ${fieldType}`);
      if ((rule === 'repeated' && kind !== 'message') || (rule === 'map' && fieldType !== 'string')) {
        // Packed repeated scalars and other map values are not needed yet.
        throw new Error(`lib/proto.js: ${typeName}.${name}: ${rule} ${fieldType} is not supported`);
      }
      if (rule === 'optional' && kind === 'message') throw new Error(`lib/proto.js: ${typeName}.${name}: optional message`);
      const wire = kind === 'scalar' ? SCALARS[fieldType].wire : kind === 'enum' ? VARINT : LEN;
      const field = { name, number, type: fieldType, kind, rule, wire: rule === 'map' ? LEN : wire };
      if (kind === 'enum') {
        field.enumNames = enumNames.get(fieldType);
        field.enumValues = SCHEMA.enums[fieldType];
      }
      if (type.byNumber.has(number)) throw new Error(`lib/proto.js: ${typeName} uses number ${number} twice`);
      type.fields.push(field);
      type.byNumber.set(number, field);
    }
  }
}
compile();

function typeOf(name) {
  const type = TYPES.get(name);
  if (!type) throw new Error(`unknown message ${name}`);
  return type;
}

// ---------------------------------------------------------------- encoding

// Collects the encoded bytes as a list of parts, copied once at the end.
class Writer {
  constructor() {
    this.parts = [];
    this.length = 0;
    this.scratch = [];
  }

  bytes(buf) {
    if (buf.length) {
      this.parts.push(buf);
      this.length += buf.length;
    }
  }

  // An unsigned varint from a non-negative safe integer or a bigint < 2^64.
  varint(value) {
    const out = [];
    if (typeof value === 'number') {
      let n = value;
      while (n >= 0x80) {
        out.push((n % 0x80) | 0x80);
        n = Math.floor(n / 0x80);
      }
      out.push(n);
    } else {
      let n = value;
      while (n >= 0x80n) {
        out.push(Number(n & 0x7fn) | 0x80);
        n >>= 7n;
      }
      out.push(Number(n));
    }
    this.bytes(Buffer.from(out));
  }

  tag(number, wire) {
    this.varint(number * 8 + wire);
  }

  finish(headroom = 0) {
    const out = Buffer.alloc(headroom + this.length);
    let at = headroom;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

function where(type, field) {
  return `${type.name}.${field.name}`;
}

function integer(value, what, min, max) {
  if (typeof value === 'bigint') {
    if (value < min || value > max) throw new ProtoError(`${what} is out of range: ${value}`);
    return value;
  }
  if (typeof value === 'number' && Number.isSafeInteger(value)) {
    if (value < min || value > max) throw new ProtoError(`${what} is out of range: ${value}`);
    return value;
  }
  if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) return integer(BigInt(value), what, min, max);
  throw new ProtoError(`${what} must be a whole number, not ${typeof value === 'string' ? JSON.stringify(value) : typeof value}`);
}

// The value of a singular field, or undefined when it is not sent: proto3
// leaves out zero values of implicit-presence fields.
function present(field, value) {
  if (value === undefined || value === null) return undefined;
  if (field.rule === 'optional' || field.kind === 'message') return value;
  if (field.kind === 'enum') return value === 0 || value === field.enumNames.get(0) ? undefined : value;
  switch (field.type) {
    case 'string':
      return value === '' ? undefined : value;
    case 'bytes':
      return value.length === 0 ? undefined : value;
    case 'bool':
      return value === false ? undefined : value;
    default:
      // 0 or 0n (or '0'): not sent.
      return value == 0 ? undefined : value; // eslint-disable-line eqeqeq
  }
}

function writeScalar(w, type, field, value) {
  const what = where(type, field);
  switch (field.type) {
    case 'string':
      if (typeof value !== 'string') throw new ProtoError(`${what} must be a string`);
      w.varint(Buffer.byteLength(value));
      w.bytes(Buffer.from(value, 'utf8'));
      return;
    case 'bytes':
      if (!(value instanceof Uint8Array)) throw new ProtoError(`${what} must be bytes`);
      w.varint(value.length);
      w.bytes(value);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw new ProtoError(`${what} must be a boolean`);
      w.varint(value ? 1 : 0);
      return;
    case 'uint32':
      w.varint(Number(integer(value, what, 0, TWO_32 - 1)));
      return;
    case 'int32': {
      const n = Number(integer(value, what, -(2 ** 31), 2 ** 31 - 1));
      // Negative int32 is sign-extended to 64 bits: ten bytes.
      w.varint(n >= 0 ? n : BigInt.asUintN(64, BigInt(n)));
      return;
    }
    case 'uint64':
      w.varint(BigInt(integer(value, what, 0n, 2n ** 64n - 1n)));
      return;
    case 'int64':
      w.varint(BigInt.asUintN(64, BigInt(integer(value, what, -(2n ** 63n), 2n ** 63n - 1n))));
      return;
    default:
      throw new Error(`unreachable: ${field.type}`);
  }
}

function writeEnum(w, type, field, value) {
  let n = value;
  if (typeof value === 'string') {
    n = field.enumValues[value];
    if (n === undefined) throw new ProtoError(`${where(type, field)}: no ${field.type} named ${value}`);
  }
  // As an int32: a negative value is sign-extended to ten bytes.
  n = Number(integer(n, where(type, field), -(2 ** 31), 2 ** 31 - 1));
  w.varint(n >= 0 ? n : BigInt.asUintN(64, BigInt(n)));
}

function writeMessage(w, type, value, depth) {
  if (depth > MAX_DEPTH) throw new ProtoError('message nested too deeply');
  if (value === null || typeof value !== 'object') throw new ProtoError(`${type.name} must be an object`);
  for (const field of type.fields) {
    const v = value[field.name];
    if (v === undefined || v === null) continue;
    if (field.rule === 'map') {
      if (typeof v !== 'object') throw new ProtoError(`${where(type, field)} must be an object of strings`);
      for (const [k, item] of v instanceof Map ? v : Object.entries(v)) {
        if (typeof k !== 'string' || typeof item !== 'string') {
          throw new ProtoError(`${where(type, field)}: names and values must be strings`);
        }
        // A map entry is a message {key = 1, value = 2}; zero values left out.
        const entry = new Writer();
        if (k !== '') {
          entry.tag(1, LEN);
          writeScalar(entry, type, field, k);
        }
        if (item !== '') {
          entry.tag(2, LEN);
          writeScalar(entry, type, field, item);
        }
        w.tag(field.number, LEN);
        w.varint(entry.length);
        for (const part of entry.parts) w.bytes(part);
      }
      continue;
    }
    const items = field.rule === 'repeated' ? v : [v];
    if (field.rule === 'repeated' && !Array.isArray(v)) throw new ProtoError(`${where(type, field)} must be an array`);
    for (const item of items) {
      const sent = field.rule === 'repeated' ? item : present(field, item);
      if (sent === undefined) continue;
      w.tag(field.number, field.wire);
      if (field.kind === 'message') {
        const sub = new Writer();
        writeMessage(sub, typeOf(field.type), sent, depth + 1);
        w.varint(sub.length);
        for (const part of sub.parts) w.bytes(part);
      } else if (field.kind === 'enum') {
        writeEnum(w, type, field, sent);
      } else {
        writeScalar(w, type, field, sent);
      }
    }
  }
}

/**
 * Encodes `value` (snake_case fields) as the message `typeName`. The result
 * starts with `headroom` zero bytes, room for a gRPC frame header. 64-bit
 * integers may be numbers, bigints or decimal strings.
 */
function encode(typeName, value, headroom = 0) {
  const w = new Writer();
  writeMessage(w, typeOf(typeName), value, 0);
  return w.finish(headroom);
}

// ---------------------------------------------------------------- decoding

class Reader {
  constructor(buf, start, end) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  truncated(what) {
    return new ProtoError(`truncated input: ${what} runs past the end of the message`);
  }

  // An unsigned varint: a number when it has at most 7 bytes (< 2^49),
  // else a bigint (< 2^64).
  varint(what) {
    const { buf } = this;
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.end) throw this.truncated(what);
      const b = buf[this.pos++];
      n += (b & 0x7f) * scale;
      if (b < 0x80) return n;
      scale *= 0x80;
    }
    let big = BigInt(n);
    let shift = 49n;
    for (let i = 7; i < 10; i++) {
      if (this.pos >= this.end) throw this.truncated(what);
      const b = buf[this.pos++];
      if (i === 9 && b > 1) throw new ProtoError(`${what}: a varint larger than 64 bits`);
      big |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return big;
      shift += 7n;
    }
    throw new ProtoError(`${what}: a varint longer than 10 bytes`);
  }

  // The bounds [start, end) of a length-delimited value.
  span(what) {
    const length = this.varint(what);
    if (typeof length !== 'number' || length > this.end - this.pos) throw this.truncated(what);
    const start = this.pos;
    this.pos += length;
    return [start, this.pos];
  }

  skip(n, what) {
    if (n > this.end - this.pos) throw this.truncated(what);
    this.pos += n;
  }

  // A field's tag: [number, wire type].
  tag(typeName) {
    const tag = this.varint(`a field tag in ${typeName}`);
    if (typeof tag !== 'number' || tag >= TWO_32) throw new ProtoError(`${typeName}: a field tag larger than 32 bits`);
    const number = Math.floor(tag / 8);
    const wire = tag % 8;
    if (number === 0) throw new ProtoError(`${typeName}: field number 0`);
    return [number, wire];
  }

  // Skips the value of an unknown field (a group up to its end tag).
  skipField(typeName, number, wire, depth) {
    const what = `unknown field ${number} of ${typeName}`;
    switch (wire) {
      case VARINT:
        this.varint(what);
        return;
      case I64:
        this.skip(8, what);
        return;
      case LEN:
        this.span(what);
        return;
      case I32:
        this.skip(4, what);
        return;
      case SGROUP: {
        if (depth > MAX_DEPTH) throw new ProtoError(`${typeName}: groups nested too deeply`);
        for (;;) {
          if (this.pos >= this.end) throw this.truncated(`group ${number} of ${typeName}`);
          const [n, w] = this.tag(typeName);
          if (w === EGROUP) {
            if (n !== number) throw new ProtoError(`${typeName}: group ${number} ended by the end tag of ${n}`);
            return;
          }
          this.skipField(typeName, n, w, depth + 1);
        }
      }
      case EGROUP:
        throw new ProtoError(`${typeName}: an end-group tag (${number}) without its start`);
      default:
        throw new ProtoError(`${typeName}: field ${number} has wire type ${wire}, which does not exist`);
    }
  }
}

function defaults(type) {
  const out = {};
  for (const field of type.fields) {
    if (field.rule === 'optional') continue;
    if (field.rule === 'repeated') out[field.name] = [];
    else if (field.rule === 'map') out[field.name] = Object.create(null);
    else if (field.kind === 'message') out[field.name] = null;
    else if (field.kind === 'enum') out[field.name] = field.enumNames.get(0);
    else out[field.name] = SCALARS[field.type].zero();
  }
  return out;
}

function readScalar(r, field, what) {
  switch (field.type) {
    case 'string': {
      const [s, e] = r.span(what);
      return r.buf.toString('utf8', s, e);
    }
    case 'bytes': {
      const [s, e] = r.span(what);
      return r.buf.subarray(s, e);
    }
    case 'bool':
      return r.varint(what) != 0; // eslint-disable-line eqeqeq
    case 'uint32': {
      const v = r.varint(what);
      return typeof v === 'number' ? v >>> 0 : Number(BigInt.asUintN(32, v));
    }
    case 'int32': {
      const v = r.varint(what);
      return typeof v === 'number' ? v | 0 : Number(BigInt.asIntN(32, v));
    }
    case 'uint64':
      return BigInt(r.varint(what));
    case 'int64':
      return BigInt.asIntN(64, BigInt(r.varint(what)));
    default:
      throw new Error(`unreachable: ${field.type}`);
  }
}

// Decodes the message bytes in [r.pos, end) into `out` (fields merge as
// protobuf says: a singular field's last value wins, messages merge,
// repeated fields and maps append).
function readMessage(r, type, out, depth) {
  if (depth > MAX_DEPTH) throw new ProtoError('message nested too deeply');
  while (r.pos < r.end) {
    const [number, wire] = r.tag(type.name);
    const field = type.byNumber.get(number);
    if (!field) {
      r.skipField(type.name, number, wire, depth);
      continue;
    }
    const what = where(type, field);
    if (wire !== field.wire) {
      throw new ProtoError(`${what} (field ${number}) has wire type ${wire}, expected ${field.wire}`);
    }
    if (field.rule === 'map') {
      const [s, e] = r.span(what);
      const entry = new Reader(r.buf, s, e);
      let key = '';
      let value = '';
      while (entry.pos < entry.end) {
        const [n, w] = entry.tag(`${what} entry`);
        if ((n === 1 || n === 2) && w === LEN) {
          const v = readScalar(entry, field, `${what} entry`);
          if (n === 1) key = v;
          else value = v;
        } else if (n === 1 || n === 2) {
          throw new ProtoError(`${what} entry: field ${n} has wire type ${w}, expected ${LEN}`);
        } else {
          entry.skipField(`${what} entry`, n, w, depth + 1);
        }
      }
      out[field.name][key] = value;
    } else if (field.kind === 'message') {
      const [s, e] = r.span(what);
      const sub = typeOf(field.type);
      const sr = new Reader(r.buf, s, e);
      if (field.rule === 'repeated') {
        const item = defaults(sub);
        readMessage(sr, sub, item, depth + 1);
        out[field.name].push(item);
      } else {
        if (out[field.name] === null) out[field.name] = defaults(sub);
        readMessage(sr, sub, out[field.name], depth + 1);
      }
    } else if (field.kind === 'enum') {
      const v = r.varint(what);
      const n = typeof v === 'number' ? v | 0 : Number(BigInt.asIntN(32, v));
      out[field.name] = field.enumNames.has(n) ? field.enumNames.get(n) : n;
    } else {
      out[field.name] = readScalar(r, field, what);
    }
  }
}

/** Decodes `buf` (a Buffer) as the message `typeName`; ProtoError when it cannot. */
function decode(typeName, bytes) {
  const type = typeOf(typeName);
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = defaults(type);
  readMessage(new Reader(buf, 0, buf.length), type, out, 0);
  return out;
}

module.exports = { SCHEMA, PACKAGE, ProtoError, decode, encode, methodPath };
