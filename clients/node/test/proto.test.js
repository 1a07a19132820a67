// The protobuf codec (lib/proto.js) against the contract and an independent
// implementation: its schema equals proto/keyhaven/v1/keyhaven.proto as
// protobufjs reads it (and lib/schema.js's small reader agrees with
// protobufjs on the whole file), and every message round-trips both ways
// through protobufjs: maps, an optional label absent or empty, 64-bit and
// negative integers, enums, unknown fields of every wire type. Truncated or
// malformed input is refused with a ProtoError.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test } = require('node:test');
const protobuf = require('protobufjs');

const { SCHEMA, PACKAGE, ProtoError, decode, encode, methodPath } = require('../lib/proto');
const { compareSchema, parseProto } = require('../lib/schema');
const { metadataFromWire } = require('../lib/convert');

const PROTO = path.join(__dirname, '..', 'proto', 'keyhaven', 'v1', 'keyhaven.proto');
const TIMESTAMP = 'google.protobuf.Timestamp';

const root = new protobuf.Root().loadSync(PROTO, { keepCase: true });
root.resolveAll();

function full(name) {
  return name.includes('.') ? name : `${PACKAGE}.${name}`;
}

function pbType(name) {
  return root.lookupType(full(name));
}

// protobufjs's view of a message, in lib/schema.js's shape.
function fieldsOf(type) {
  const fields = new Map();
  for (const f of type.fieldsArray) {
    const synthetic = f.partOf && f.options && f.options.proto3_optional;
    let rule = '';
    if (f.map) rule = 'map';
    else if (f.repeated) rule = 'repeated';
    else if (synthetic) rule = 'optional';
    fields.set(f.name, {
      number: f.id,
      type: f.resolvedType ? f.resolvedType.fullName.slice(1) : f.type,
      rule,
      keyType: f.map ? f.keyType : undefined,
      oneof: f.partOf && !synthetic ? f.partOf.name : undefined,
    });
  }
  return fields;
}

// Every message, enum and service of the file, as lib/schema.js gives them.
function protobufjsView() {
  const out = { package: PACKAGE, messages: new Map(), enums: new Map(), services: new Map() };
  const ns = root.lookup(PACKAGE);
  for (const item of ns.nestedArray) {
    const name = item.fullName.slice(1);
    if (item instanceof protobuf.Type) out.messages.set(name, fieldsOf(item));
    else if (item instanceof protobuf.Enum) out.enums.set(name, new Map(Object.entries(item.values)));
    else if (item instanceof protobuf.Service) {
      const methods = new Map();
      for (const m of item.methodsArray) {
        m.resolve();
        methods.set(m.name, {
          request: m.resolvedRequestType.fullName.slice(1),
          response: m.resolvedResponseType.fullName.slice(1),
          requestStream: Boolean(m.requestStream),
          responseStream: Boolean(m.responseStream),
        });
      }
      out.services.set(name, methods);
    }
  }
  return out;
}

describe('the codec\'s schema is the .proto\'s', () => {
  test('every message the codec knows has exactly the fields of the .proto (numbers, types, rules)', () => {
    const problems = compareSchema(protobufjsView(), { complete: true, timestamp: fieldsOf(root.lookupType(TIMESTAMP)) });
    assert.deepEqual(problems, []);
    // The codec knows these, at least: a schema emptied by mistake must fail.
    for (const name of ['CredentialMetadata', 'StoreRequest', 'WatchEvent', 'StatusResponse', TIMESTAMP]) {
      assert.ok(SCHEMA.messages[name].length > 0, name);
    }
  });

  test('a field that differs is reported', () => {
    const view = protobufjsView();
    const meta = view.messages.get('keyhaven.v1.CredentialMetadata');
    meta.set('revision', { ...meta.get('revision'), number: 9 });
    meta.set('label', { ...meta.get('label'), rule: '' });
    meta.set('newer', { number: 20, type: 'string', rule: '' });
    view.messages.get('keyhaven.v1.StoreRequest').delete('secret');
    view.services.get('keyhaven.v1.Credentials').get('Watch').responseStream = false;
    const problems = compareSchema(view, { complete: true });
    assert.ok(problems.some((p) => /CredentialMetadata\.revision: the codec has uint64 = 2, the \.proto uint64 = 9/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => /CredentialMetadata\.label: the codec has optional string = 6/.test(p)));
    assert.ok(problems.some((p) => /CredentialMetadata\.newer \(= 20\) is in the \.proto but not in lib\/proto\.js/.test(p)));
    assert.ok(problems.some((p) => /StoreRequest\.secret is not in the \.proto/.test(p)));
    assert.ok(problems.some((p) => /rpc keyhaven\.v1\.Credentials\.Watch/.test(p)));
    // Without `complete`, a field the codec does not know is not a problem.
    assert.ok(!compareSchema(view).some((p) => /newer/.test(p)));
  });

  test('the methods are the .proto\'s, at the paths gRPC uses', () => {
    assert.equal(methodPath('Store'), '/keyhaven.v1.Credentials/Store');
    assert.equal(methodPath('Status'), '/keyhaven.v1.Daemon/Status');
    assert.equal(methodPath('Watch'), '/keyhaven.v1.Credentials/Watch');
    for (const [method, m] of Object.entries(SCHEMA.methods)) {
      const service = root.lookupService(`${PACKAGE}.${m.service}`);
      assert.ok(service.methods[method], `${m.service}.${method}`);
    }
  });

  test('lib/schema.js reads the whole .proto as protobufjs does', () => {
    const mine = parseProto(fs.readFileSync(PROTO, 'utf8'));
    const theirs = protobufjsView();
    assert.equal(mine.package, PACKAGE);
    assert.deepEqual([...mine.messages.keys()].sort(), [...theirs.messages.keys()].sort());
    for (const [name, fields] of theirs.messages) assert.deepEqual(mine.messages.get(name), fields, name);
    assert.deepEqual(mine.enums, theirs.enums);
    assert.deepEqual(mine.services, theirs.services);
  });

  test('lib/schema.js reads nested types, oneofs, options and comments', () => {
    const parsed = parseProto(`
      syntax = "proto3"; /* a comment */ package a.b;
      option java_package = "x";
      message Outer {
        reserved 4, 8 to 10; reserved "gone";
        message Inner { int32 x = 1 [deprecated = true]; }
        enum Color { option allow_alias = true; RED = 0; CRIMSON = 0; BLUE = -1; }
        Inner inner = 1; // trailing
        repeated Color colors = 2;
        map<int64, Inner> by_id = 3;
        oneof choice { string s = 5; bytes b = 6; }
        .a.b.Outer self = 7;
      }
      service S { rpc M(stream Outer) returns (Outer.Inner) { option deprecated = true; } }
    `);
    const outer = parsed.messages.get('a.b.Outer');
    assert.deepEqual(outer.get('inner'), { number: 1, type: 'a.b.Outer.Inner', rule: '', keyType: undefined, oneof: undefined });
    assert.equal(outer.get('colors').type, 'a.b.Outer.Color');
    assert.equal(outer.get('colors').rule, 'repeated');
    assert.deepEqual([outer.get('by_id').rule, outer.get('by_id').keyType, outer.get('by_id').type], ['map', 'int64', 'a.b.Outer.Inner']);
    assert.equal(outer.get('b').oneof, 'choice');
    assert.equal(outer.get('self').type, 'a.b.Outer');
    assert.deepEqual(parsed.enums.get('a.b.Outer.Color'), new Map([['RED', 0], ['CRIMSON', 0], ['BLUE', -1]]));
    assert.deepEqual(parsed.services.get('a.b.S').get('M'), {
      request: 'a.b.Outer',
      response: 'a.b.Outer.Inner',
      requestStream: true,
      responseStream: false,
    });
    assert.throws(() => parseProto('message M { string x = ; }'), /line 1: expected a number/);
  });
});

// ------------------------------------------------------------ round trips

const U64_MAX = 2n ** 64n - 1n;
const BIG = 2n ** 53n + 1n; // not exact as a JavaScript number

const key = { provider: 'jellyfin', server_id: 'srv-ü', user_id: '', token_type: 'access_token' };
const ts = (seconds, nanos = 0) => ({ seconds, nanos });
const metadata = {
  key,
  revision: BIG,
  created_at: ts(1700000000n, 123456789),
  updated_at: ts(-62135596800n, 999999999), // year 1: a negative int64
  expires_at: null,
  label: '',
  attributes: { server_url: 'https://jf.example/?a=b#c', device_id: 'dev-1', empty: '', 'with.dot-and_': 'ünïcode ✓' },
};
const bare = { key: null, revision: 0n, created_at: null, updated_at: null, expires_at: null, attributes: {} };

// Messages as the codec reads them (defaults filled in), by type.
const SAMPLES = {
  CredentialKey: [key, { provider: '', server_id: '', user_id: '', token_type: '' }],
  CredentialMetadata: [metadata, { ...metadata, label: 'Living room', revision: U64_MAX, expires_at: ts(0n, 1) }, bare],
  StoreRequest: [
    {
      key,
      secret: Buffer.from([0, 0xff, 0x80, 0x0a]),
      label: '',
      expires_at: ts(1n),
      expected_revision: 0n,
      attributes: { a: '1' },
      clear_attributes: false,
    },
    { key, secret: Buffer.alloc(70000, 7), expires_at: null, expected_revision: U64_MAX, attributes: {}, clear_attributes: true },
    { key: null, secret: Buffer.alloc(0), expires_at: null, attributes: {}, clear_attributes: false },
  ],
  StoreResponse: [{ metadata, created: true }, { metadata: null, created: false }],
  RetrieveRequest: [{ key }],
  RetrieveResponse: [{ metadata, secret: Buffer.from('tok') }],
  DeleteRequest: [{ key, expected_revision: 7n }, { key }],
  DeleteResponse: [{ metadata }],
  ListRequest: [
    {
      provider: 'p',
      server_id: '',
      user_id: 'u',
      page_size: 2 ** 32 - 1,
      page_token: 'next',
      match_empty_server_id: true,
      match_empty_user_id: false,
      attributes: { server_name: 'Home' },
    },
  ],
  ListResponse: [{ credentials: [metadata, bare, metadata], next_page_token: 'tok' }, { credentials: [], next_page_token: '' }],
  CallerIdentity: [{ uid: 2 ** 32 - 1, pid: -1, executable: '/usr/bin/node', app_id: 'org.example.App' }],
  WatchRequest: [
    {
      provider: 'jellyfin',
      server_id: 's',
      user_id: '',
      match_empty_server_id: true,
      match_empty_user_id: true,
      snapshot: true,
      attributes: { device_id: 'd', server_name: 'Home' },
    },
  ],
  WatchEvent: [
    {
      kind: 'EVENT_KIND_UPDATED',
      metadata,
      time: ts(1700000001n, 5),
      actor: { uid: 1000, pid: 2 ** 31 - 1, executable: '', app_id: '' },
      missed: 0n,
    },
    { kind: 'EVENT_KIND_LAGGED', metadata: null, time: null, actor: null, missed: BIG },
    { kind: 'EVENT_KIND_UNSPECIFIED', metadata: null, time: null, actor: null, missed: 0n },
  ],
  LogoutRequest: [
    { provider: 'plex', server_id: '', user_id: '' },
    { provider: 'plex', server_id: 'srv' },
  ],
  LogoutResponse: [{ deleted: [metadata, metadata] }],
  StatusRequest: [{}],
  StatusResponse: [
    {
      version: '0.1.0',
      protocol: 1,
      pid: 4242,
      store_path: '/x/store.db',
      key_tier: 'file',
      key_source: '/x/key',
      credential_count: BIG,
      uptime_seconds: 12n,
      key_problem: '',
      key_tiers: [
        { tier: 'keyring', state: 'unavailable', detail: 'no D-Bus' },
        { tier: 'file', state: 'active', detail: '' },
      ],
      key_id: 'k1',
      policy: 'none',
      last_backup_at: ts(1700000002n),
      last_backup: 'streamed to a client',
    },
  ],
  KeyTierState: [{ tier: 'file', state: 'holds-key', detail: '/x/key' }, {}],
  [TIMESTAMP]: [ts(-1n, 0), ts(253402300799n, 999999999)],
};

// `value` with every default the decoder fills in.
function withDefaults(typeName, value) {
  const out = {};
  for (const [name, , type, rule] of SCHEMA.messages[typeName]) {
    const v = value[name];
    if (rule === 'optional') {
      if (v !== undefined) out[name] = v;
    } else if (rule === 'repeated') {
      out[name] = (v || []).map((item) => withDefaults(type, item));
    } else if (rule === 'map') {
      out[name] = Object.assign(Object.create(null), v || {});
    } else if (SCHEMA.messages[type]) {
      out[name] = v ? withDefaults(type, v) : null;
    } else if (SCHEMA.enums[type]) {
      out[name] = v === undefined ? Object.keys(SCHEMA.enums[type])[0] : v;
    } else {
      const zero = { string: '', bytes: Buffer.alloc(0), bool: false, uint32: 0, int32: 0, uint64: 0n, int64: 0n }[type];
      out[name] = v === undefined ? zero : v;
    }
  }
  return out;
}

// protobufjs's plain object -> the codec's shape (strings for 64-bit ints).
function fromPbjs(typeName, obj) {
  const out = {};
  for (const [name, , type, rule] of SCHEMA.messages[typeName]) {
    const v = obj[name];
    if (rule === 'optional') {
      if (v !== undefined && v !== null) out[name] = type === 'uint64' ? BigInt(v) : v;
    } else if (rule === 'repeated') {
      out[name] = (v || []).map((item) => fromPbjs(type, item));
    } else if (rule === 'map') {
      out[name] = Object.assign(Object.create(null), v || {});
    } else if (SCHEMA.messages[type]) {
      out[name] = v ? fromPbjs(type, v) : null;
    } else if (type === 'uint64' || type === 'int64') {
      out[name] = BigInt(v);
    } else {
      out[name] = v;
    }
  }
  return out;
}

// The codec's shape -> what protobufjs's fromObject takes.
function toPbjs(typeName, value) {
  const out = {};
  for (const [name, , type, rule] of SCHEMA.messages[typeName]) {
    const v = value[name];
    if (v === undefined || v === null) continue;
    if (rule === 'repeated') out[name] = v.map((item) => toPbjs(type, item));
    else if (rule === 'map') out[name] = { ...v };
    else if (SCHEMA.messages[type]) out[name] = toPbjs(type, v);
    else if (typeof v === 'bigint') out[name] = v.toString();
    else out[name] = v;
  }
  return out;
}

const PBJS = { longs: String, enums: String, bytes: Buffer, defaults: true, arrays: true, objects: true, oneofs: false };

function viaProtobufjs(typeName, bytes) {
  const T = pbType(typeName);
  return fromPbjs(typeName, T.toObject(T.decode(bytes), PBJS));
}

function byProtobufjs(typeName, value) {
  const T = pbType(typeName);
  const message = T.fromObject(toPbjs(typeName, value));
  assert.equal(T.verify(message), null);
  return Buffer.from(T.encode(message).finish());
}

describe('round trips through protobufjs', () => {
  for (const [typeName, samples] of Object.entries(SAMPLES)) {
    test(`${typeName}: encoded here, read by protobufjs, and the other way`, () => {
      samples.forEach((sample, i) => {
        const want = withDefaults(typeName, sample);
        const ours = encode(typeName, sample);
        assert.deepEqual(viaProtobufjs(typeName, ours), want, `sample ${i} encoded by the codec`);
        assert.deepEqual(decode(typeName, ours), want, `sample ${i} through the codec alone`);
        assert.deepEqual(decode(typeName, byProtobufjs(typeName, sample)), want, `sample ${i} encoded by protobufjs`);
      });
    });
  }

  test('every message of the schema has samples', () => {
    assert.deepEqual(Object.keys(SAMPLES).sort(), Object.keys(SCHEMA.messages).sort());
  });

  test('an optional label: absent and empty differ on the wire and in the API', () => {
    const absent = encode('CredentialMetadata', { ...metadata, label: undefined });
    const empty = encode('CredentialMetadata', { ...metadata, label: '' });
    assert.equal(empty.length, absent.length + 2, 'an empty label is sent: tag and length 0');
    const T = pbType('CredentialMetadata');
    assert.equal(Object.prototype.hasOwnProperty.call(T.decode(absent), 'label'), false);
    assert.equal(Object.prototype.hasOwnProperty.call(T.decode(empty), 'label'), true);
    assert.equal(decode('CredentialMetadata', absent).label, undefined);
    assert.equal(decode('CredentialMetadata', empty).label, '');
    assert.equal(metadataFromWire(decode('CredentialMetadata', absent)).label, null);
    assert.equal(metadataFromWire(decode('CredentialMetadata', empty)).label, '');
    // And from protobufjs's side.
    assert.equal(decode('CredentialMetadata', byProtobufjs('CredentialMetadata', { label: '' })).label, '');
    assert.equal(decode('CredentialMetadata', byProtobufjs('CredentialMetadata', {})).label, undefined);
  });

  test('64-bit integers stay exact; the API gives numbers exact up to 2^53', () => {
    const m = decode('CredentialMetadata', byProtobufjs('CredentialMetadata', { revision: U64_MAX }));
    assert.equal(m.revision, U64_MAX);
    assert.equal(decode('CredentialMetadata', encode('CredentialMetadata', { revision: BIG })).revision, BIG);
    assert.equal(metadataFromWire(decode('CredentialMetadata', encode('CredentialMetadata', { revision: 2 ** 53 - 1 }))).revision, 2 ** 53 - 1);
    // A revision may be given as a number, a bigint or a decimal string.
    for (const r of [12345678901, 12345678901n, '12345678901']) {
      assert.equal(decode('DeleteRequest', encode('DeleteRequest', { expected_revision: r })).expected_revision, 12345678901n);
    }
    // Ten-byte varints: a negative int32 and int64.
    const negative = encode('CallerIdentity', { pid: -2 });
    assert.equal(negative.length, 11);
    assert.equal(decode('CallerIdentity', negative).pid, -2);
    assert.equal(decode(TIMESTAMP, encode(TIMESTAMP, { seconds: -(2n ** 63n) })).seconds, -(2n ** 63n));
  });

  test('enum values the codec does not know stay numbers; names and numbers both encode', () => {
    const bytes = Buffer.from([0x08, 0x63]); // kind = 99
    assert.equal(decode('WatchEvent', bytes).kind, 99);
    assert.deepEqual(encode('WatchEvent', { kind: 'EVENT_KIND_SYNCED' }), encode('WatchEvent', { kind: 6 }));
    assert.deepEqual(encode('WatchEvent', { kind: 'EVENT_KIND_UNSPECIFIED' }), Buffer.alloc(0));
  });

  test('maps: several entries, empty keys and values, an entry with a missing or unknown field, a repeated key', () => {
    const attrs = { '': 'empty name', a: '', b: 'x'.repeat(1024) };
    assert.deepEqual({ ...decode('CredentialMetadata', encode('CredentialMetadata', { attributes: attrs })).attributes }, attrs);
    // Entries by hand: {key "k"} (no value), {value "v"} (no key), {key "z", value "1", 9: 5}, {key "z", value "2"}.
    const entry = (...bytes) => [0x3a, bytes.length, ...bytes];
    const bytes = Buffer.from([
      ...entry(0x0a, 1, 0x6b),
      ...entry(0x12, 1, 0x76),
      ...entry(0x0a, 1, 0x7a, 0x12, 1, 0x31, 0x48, 5),
      ...entry(0x0a, 1, 0x7a, 0x12, 1, 0x32),
    ]);
    assert.deepEqual({ ...decode('CredentialMetadata', bytes).attributes }, { k: '', '': 'v', z: '2' });
    assert.deepEqual({ ...viaProtobufjs('CredentialMetadata', bytes).attributes }, { k: '', '': 'v', z: '2' });
    // "__proto__" is an attribute name like any other.
    const proto = decode('CredentialMetadata', encode('CredentialMetadata', { attributes: JSON.parse('{"__proto__": "p"}') }));
    assert.equal(Object.keys(proto.attributes)[0], '__proto__');
    assert.deepEqual(Object.keys(metadataFromWire(proto).attributes), ['__proto__']);
  });
});

// ------------------------------------------------------- unknown fields

// Raw protobuf bytes: a tag, and values of each wire type.
const tag = (n, wire) => varint(n * 8 + wire);
function varint(v) {
  const out = [];
  let n = BigInt(v);
  while (n >= 0x80n) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
  return out;
}
const lenField = (n, bytes) => [...tag(n, 2), ...varint(bytes.length), ...bytes];

describe('unknown fields (a newer daemon) are skipped', () => {
  const UNKNOWN = [
    ...tag(100, 0), ...varint(U64_MAX),
    ...tag(101, 1), 1, 2, 3, 4, 5, 6, 7, 8,
    ...lenField(102, [0xff, 0xfe, 0x00]),
    ...tag(103, 5), 9, 9, 9, 9,
    // A group (wire types 3 and 4) holding a varint, a nested group and bytes.
    ...tag(104, 3), ...tag(1, 0), 1, ...tag(2, 3), ...tag(1, 5), 0, 0, 0, 0, ...tag(2, 4), ...lenField(3, [1, 2]), ...tag(104, 4),
    ...tag(536870911, 0), 0, // the largest field number
  ];

  test('of every wire type, before, between and after the known ones, and inside nested messages', () => {
    const known = encode('CredentialMetadata', metadata);
    const want = decode('CredentialMetadata', known);
    const keyBytes = encode('CredentialKey', key);
    const withNested = Buffer.from([
      ...UNKNOWN,
      ...lenField(1, [...keyBytes, ...UNKNOWN]),
      ...UNKNOWN,
      ...known.subarray(2 + keyBytes.length), // the rest of the known fields
      ...UNKNOWN,
    ]);
    assert.equal(known[0], 0x0a, 'field 1 (key) comes first');
    assert.deepEqual(decode('CredentialMetadata', withNested), want);
    assert.deepEqual(decode('StatusRequest', Buffer.from(UNKNOWN)), {});
  });

  test('from a newer contract encoded by protobufjs: new fields, types and messages are ignored', () => {
    const text = fs
      .readFileSync(PROTO, 'utf8')
      .replace(
        '  map<string, string> attributes = 7;\n  // 8..15 reserved',
        `  map<string, string> attributes = 7;
  fixed64 f64 = 8; fixed32 f32 = 9; double d = 10; float fl = 11; sint64 s = 12;
  repeated uint32 packed = 13; Extra extra = 14; repeated Extra extras = 15; map<int32, Extra> by = 16;
  // 8..15 reserved`,
      )
      .replace('message StoreResponse {', 'message Extra { string note = 1; bytes blob = 2; }\nmessage StoreResponse {')
      .replace('  uint64 missed = 5;\n}', '  uint64 missed = 5;\n  EventKind other_kind = 6;\n  repeated CallerIdentity more = 7;\n}');
    const newer = new protobuf.Root();
    newer.addJSON(protobuf.common.get('google/protobuf/timestamp.proto').nested);
    protobuf.parse(text, newer, { keepCase: true });
    newer.resolveAll();
    const Event = newer.lookupType('keyhaven.v1.WatchEvent');
    const extra = { note: 'n', blob: Buffer.from([1, 2, 3]) };
    const message = Event.fromObject({
      kind: 'EVENT_KIND_STORED',
      metadata: {
        ...toPbjs('CredentialMetadata', metadata),
        f64: '18446744073709551615',
        f32: 4294967295,
        d: -1.5,
        fl: 2.5,
        s: '-9',
        packed: [1, 300, 70000],
        extra,
        extras: [extra, extra],
        by: { 1: extra, '-2': extra },
      },
      time: { seconds: '5', nanos: 6 },
      actor: { uid: 1, pid: 2, executable: 'e', app_id: 'a' },
      missed: '3',
      other_kind: 'EVENT_KIND_LAGGED',
      more: [{ uid: 9 }],
    });
    const bytes = Buffer.from(Event.encode(message).finish());
    const got = decode('WatchEvent', bytes);
    assert.deepEqual(got, {
      kind: 'EVENT_KIND_STORED',
      metadata: withDefaults('CredentialMetadata', metadata),
      time: ts(5n, 6),
      actor: { uid: 1, pid: 2, executable: 'e', app_id: 'a' },
      missed: 3n,
    });
  });
});

// ------------------------------------------------------- bad input

describe('truncated or malformed input is refused with a ProtoError', () => {
  const refused = (typeName, bytes, pattern) =>
    assert.throws(() => decode(typeName, Buffer.from(bytes)), (e) => {
      assert.ok(e instanceof ProtoError, `${e}`);
      assert.match(e.message, pattern);
      return true;
    });

  test('cut inside a varint, a string, a nested message, bytes, fixed64, fixed32 or a group', () => {
    refused('CredentialMetadata', [0x10, 0xff, 0xff], /truncated input: CredentialMetadata\.revision/);
    refused('CredentialKey', [0x0a, 5, 0x61, 0x62], /truncated input: CredentialKey\.provider/);
    refused('CredentialMetadata', [0x0a, 10, 0x0a, 1, 0x61], /truncated input: CredentialMetadata\.key/);
    refused('CredentialMetadata', [0x0a, 3, 0x0a, 5, 0x61], /truncated input: CredentialKey\.provider/);
    refused('RetrieveResponse', [0x12, 0x80], /truncated input: RetrieveResponse\.secret/);
    refused('CredentialKey', [...tag(50, 1), 1, 2, 3], /truncated input: unknown field 50 of CredentialKey/);
    refused('CredentialKey', [...tag(50, 5), 1, 2, 3], /truncated input: unknown field 50 of CredentialKey/);
    refused('CredentialKey', [...tag(50, 3), ...tag(1, 0), 1], /truncated input: group 50 of CredentialKey/);
    refused('CredentialKey', [0x0a], /truncated input: CredentialKey\.provider/);
    refused('CredentialKey', [0x80], /truncated input: a field tag in CredentialKey/);
  });

  test('every cut of a real message is either a shorter valid message or refused, never another error', () => {
    const bytes = encode('ListResponse', SAMPLES.ListResponse[0]);
    let refusedCount = 0;
    for (let n = 0; n < bytes.length; n++) {
      try {
        decode('ListResponse', bytes.subarray(0, n));
      } catch (e) {
        assert.ok(e instanceof ProtoError, `cut at ${n}: ${e}`);
        refusedCount += 1;
      }
    }
    assert.ok(refusedCount > bytes.length / 2, `${refusedCount} of ${bytes.length} cuts refused`);
  });

  test('malformed: wire types 6 and 7, field 0, an end-group alone, a varint past 64 bits, a known field of the wrong wire type', () => {
    refused('CredentialKey', [...tag(9, 6)], /wire type 6, which does not exist/);
    refused('CredentialKey', [...tag(9, 7)], /wire type 7/);
    refused('CredentialKey', [0x00, 0x01], /field number 0/);
    refused('CredentialKey', [...tag(9, 4)], /end-group tag/);
    refused('CredentialKey', [...tag(9, 3), ...tag(8, 4)], /group 9 ended by the end tag of 8/);
    refused('CredentialMetadata', [0x10, ...Array(9).fill(0xff), 0x02], /larger than 64 bits/);
    refused('CredentialMetadata', [0x10, ...Array(10).fill(0xff), 0x01], /larger than 64 bits|longer than 10 bytes/);
    refused('CredentialMetadata', [0x12, 0x00], /CredentialMetadata\.revision \(field 2\) has wire type 2, expected 0/);
    refused('CredentialMetadata', [...tag(7, 0), 1], /CredentialMetadata\.attributes \(field 7\) has wire type 0, expected 2/);
  });

  test('values the codec cannot encode', () => {
    const bad = (typeName, value, pattern) =>
      assert.throws(() => encode(typeName, value), (e) => e instanceof ProtoError && pattern.test(e.message));
    bad('ListRequest', { page_size: 2 ** 32 }, /ListRequest\.page_size is out of range/);
    bad('ListRequest', { page_size: 1.5 }, /ListRequest\.page_size must be a whole number/);
    bad('DeleteRequest', { expected_revision: -1n }, /out of range/);
    bad('DeleteRequest', { expected_revision: 2n ** 64n }, /out of range/);
    bad('CredentialKey', { provider: 5 }, /CredentialKey\.provider must be a string/);
    bad('StoreRequest', { secret: 'not bytes' }, /StoreRequest\.secret must be bytes/);
    bad('StoreRequest', { attributes: { a: 1 } }, /StoreRequest\.attributes: names and values must be strings/);
    bad('WatchEvent', { kind: 'EVENT_KIND_NOPE' }, /no EventKind named EVENT_KIND_NOPE/);
  });
});
