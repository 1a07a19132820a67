// Types for the keyhaven package (hand-written; the code is index.js and lib/).
/// <reference types="node" />

import { inspect } from 'util';

/** The address of one credential. Apps that agree on these four fields share a login. */
export interface CredentialKey {
  /** Who issued the token: "jellyfin", "plex", "emby", ... */
  provider: string;
  /** The server's own id; '' (the default) for account-wide tokens. */
  serverId?: string;
  /** The account on that server; may be '' (the default). */
  userId?: string;
  /** Defaults to 'access_token'. */
  tokenType?: string;
}

/** A key as the daemon reports it: every field filled in. */
export interface Key {
  provider: string;
  serverId: string;
  userId: string;
  tokenType: string;
}

/**
 * Non-secret names and values that say what a credential is for. At most
 * 32; names of 1 to 64 ASCII letters, digits, '.', '_' or '-'; values of at
 * most 1024 bytes without control or bidi characters (the daemon checks).
 */
export type Attributes = Record<string, string>;

/** Everything about a stored credential except the secret. */
export interface Metadata {
  key: Key;
  /** Store-wide unique, increasing with every write. */
  revision: number;
  createdAt: Date;
  updatedAt: Date;
  /** null: never expires. */
  expiresAt: Date | null;
  label: string | null;
  /** Names in order. */
  attributes: Attributes;
}

/** A credential read from the daemon. The secret is redacted from inspect, JSON and String(). */
export class Credential {
  private constructor();
  readonly metadata: Metadata;
  /** The token bytes (not enumerable). */
  readonly secret: Buffer;
  toJSON(): { metadata: Metadata; secret: '[REDACTED]' };
  toString(): string;
  [inspect.custom](depth: number, options: object, inspectFn?: typeof inspect): string;
}

/** Per-call options. */
export interface CallOptions {
  /** This call's deadline in milliseconds (default: the client's `timeoutMs`). */
  timeoutMs?: number;
}

export interface StoreOptions extends CallOptions {
  /** Absent clears the stored label. */
  label?: string;
  /** Absent: never expires. A Date or milliseconds since the epoch. */
  expiresAt?: Date | number;
  /** 0: only if absent; n: only if still at revision n. Otherwise ConflictError. */
  expectedRevision?: number | bigint;
  /** Absent keeps the stored attributes; `{}` removes them; an object replaces them. */
  attributes?: Attributes;
}

export interface Stored {
  metadata: Metadata;
  /** True when nothing was stored under the key before. */
  created: boolean;
}

export interface DeleteOptions extends CallOptions {
  /** Only if the stored revision is still this one; otherwise ConflictError. */
  expectedRevision?: number | bigint;
}

/** Which credentials: an absent field matches anything; serverId or userId '' only empty ids. */
export interface Filter {
  provider?: string;
  serverId?: string;
  userId?: string;
  /** Only credentials carrying every one of these, exactly. */
  attributes?: Attributes;
}

export interface ListOptions extends Filter, CallOptions {
  /** Credentials per request (default 500, at most 1000); list() follows every page. */
  pageSize?: number;
}

export interface WatchOptions extends Filter {
  /** First the current state: SNAPSHOT events, then SYNCED. */
  snapshot?: boolean;
  /** Ends the watch (before the daemon answers: watch() rejects with its reason). */
  signal?: AbortSignal;
  /** How long the daemon may take to answer the Watch, or with a snapshot to send its first event (default: the client's `timeoutMs`). */
  timeoutMs?: number;
}

export type EventKind = 'STORED' | 'UPDATED' | 'DELETED' | 'EXPIRED' | 'SNAPSHOT' | 'SYNCED' | 'LAGGED' | 'UNKNOWN';

/** Which program acted, as the daemon saw it (executable identifies, does not authenticate). */
export interface Actor {
  uid: number;
  pid: number;
  executable: string;
  appId: string;
}

/** One change. Never carries a secret. */
export interface WatchEvent {
  kind: EventKind;
  /** After the change; for DELETED and EXPIRED the last state. null for SYNCED and LAGGED. */
  metadata: Metadata | null;
  time: Date | null;
  /** null for EXPIRED, SNAPSHOT, SYNCED and LAGGED. */
  actor: Actor | null;
  /** LAGGED: how many events were dropped (watch again with snapshot). */
  missed: number;
}

/** An open watch: iterate with `for await`; end with cancel(), break or the signal. */
export class Watch implements AsyncIterable<WatchEvent> {
  private constructor();
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<WatchEvent>;
}

/** What the daemon says about itself. */
export interface DaemonStatus {
  version: string;
  protocol: number;
  pid: number;
  storePath: string;
  keyTier: string;
  keySource: string;
  credentialCount: number;
  uptimeSeconds: number;
  /** '' when the store is open; otherwise why it is locked. */
  keyProblem: string;
  keyId: string;
  policy: string;
}

export interface ClientOptions {
  /** The socket; default: $KEYHAVEN_SOCKET, $XDG_RUNTIME_DIR/keyhaven/keyhaven.sock, ${TMPDIR:-/tmp}/keyhaven-$UID/keyhaven.sock. */
  socket?: string;
  /** Deadline of the handshake (Daemon.Status), default 5000. */
  connectTimeoutMs?: number;
  /** Deadline of each call and of the answer to a Watch (with a snapshot, its first event), default 30000. */
  timeoutMs?: number;
  /** One more uid whose daemon to trust, besides yours and KEYHAVEN_ALLOW_DAEMON_UID's. */
  allowDaemonUid?: number;
  /** A directory holding keyhaven/v1/keyhaven.proto to check the built-in codec against before connecting; default: no check. */
  protoDir?: string;
  /** Where KEYHAVEN_SOCKET, XDG_RUNTIME_DIR, TMPDIR and KEYHAVEN_ALLOW_DAEMON_UID are read; default process.env. */
  env?: NodeJS.ProcessEnv;
}

export class Client {
  constructor(options?: ClientOptions);
  /** The socket this client talks to (absolute). */
  readonly socket: string;
  /** The handshake's answer; null before connect(). */
  readonly daemon: DaemonStatus | null;
  /** Checks the daemon (nothing sent on refusal), connects, checks the protocol. Every call does this first. */
  connect(): Promise<this>;
  store(key: CredentialKey, secret: Buffer | Uint8Array | string, options?: StoreOptions): Promise<Stored>;
  get(key: CredentialKey, options?: CallOptions): Promise<Credential>;
  delete(key: CredentialKey, options?: DeleteOptions): Promise<Metadata>;
  list(filter?: ListOptions): Promise<Metadata[]>;
  /** Resolves once the daemon has registered the watcher: no later change is missed. */
  watch(options?: WatchOptions): Promise<Watch>;
  /** Deletes every credential of provider + serverId (+ userId) at once; resolves to what was deleted. */
  logout(provider: string, serverId?: string, userId?: string, options?: CallOptions): Promise<Metadata[]>;
  status(options?: CallOptions): Promise<DaemonStatus>;
  /** Ends every open Watch and closes the connection. */
  close(): void;
}

/** `new Client(options).connect()`. */
export function connect(options?: ClientOptions): Promise<Client>;

export type ErrorCode =
  | 'NOT_FOUND'
  | 'PERMISSION_DENIED'
  | 'CONFLICT'
  | 'INVALID_ARGUMENT'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'PROTOCOL_MISMATCH'
  | 'DATA_LOSS'
  | 'UNTRUSTED_DAEMON'
  | 'FAILURE';

/** Every error this package throws. Decide on the class or `code`, not the message. */
export class KeyhavenError extends Error {
  readonly code: ErrorCode;
  /** The `keyhaven` CLI's exit code for this outcome (see EXIT). */
  readonly exitCode: number;
  /** The gRPC status, when the daemon (or gRPC) answered with one. */
  readonly grpcCode: number | undefined;
  readonly grpcStatus: string | undefined;
  /** The daemon's message, when it gave one. */
  readonly details: string | undefined;
}
export class NotFoundError extends KeyhavenError {
  readonly code: 'NOT_FOUND';
}
export class PermissionDeniedError extends KeyhavenError {
  readonly code: 'PERMISSION_DENIED';
}
export class ConflictError extends KeyhavenError {
  readonly code: 'CONFLICT';
}
export class InvalidArgumentError extends KeyhavenError {
  readonly code: 'INVALID_ARGUMENT';
}
export class UnavailableError extends KeyhavenError {
  readonly code: 'UNAVAILABLE';
}
export class ProtocolMismatchError extends KeyhavenError {
  readonly code: 'PROTOCOL_MISMATCH';
}
/** The socket or its directory is not the user's own and private: nothing was sent. */
export class UntrustedDaemonError extends KeyhavenError {
  readonly code: 'UNTRUSTED_DAEMON';
  /** The socket or directory checked. */
  readonly path: string;
  /** Its owner's uid. */
  readonly ownerUid: number;
}

/** The `keyhaven` CLI's exit codes. */
export const EXIT: Readonly<{
  OK: 0;
  FAILURE: 1;
  USAGE: 2;
  NOT_FOUND: 3;
  PERMISSION_DENIED: 4;
  UNAVAILABLE: 5;
  INVALID_INPUT: 6;
  CONFLICT: 7;
  PROTOCOL_MISMATCH: 8;
  UNTRUSTED_DAEMON: 9;
}>;

/** The wire protocol number this package speaks. */
export const PROTOCOL: 1;

/** Attribute names every app understands. */
export const Attribute: Readonly<{
  SERVER_URL: 'server_url';
  SERVER_NAME: 'server_name';
  USER_NAME: 'user_name';
  DEVICE_ID: 'device_id';
  CLIENT_NAME: 'client_name';
}>;

export const ENV_ALLOW_DAEMON_UID: 'KEYHAVEN_ALLOW_DAEMON_UID';

/** The uid KEYHAVEN_ALLOW_DAEMON_UID names, or null; InvalidArgumentError when it is not a uid. */
export function allowedDaemonUid(env?: NodeJS.ProcessEnv): number | null;

/** The socket by the client's rule, and whether it was named (option or KEYHAVEN_SOCKET). */
export function resolveSocket(options?: { socket?: string; env?: NodeJS.ProcessEnv }): { path: string; explicit: boolean };

/** The text form provider::server_id::user_id::token_type (':' and '%' escaped). */
export function formatKey(key: CredentialKey): string;

/** Parses the text form (the token type may be left out). */
export function parseKey(text: string): Key;
