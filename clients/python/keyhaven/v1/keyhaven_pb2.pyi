import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_STORED: _ClassVar[EventKind]
    EVENT_KIND_UPDATED: _ClassVar[EventKind]
    EVENT_KIND_DELETED: _ClassVar[EventKind]
    EVENT_KIND_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_SNAPSHOT: _ClassVar[EventKind]
    EVENT_KIND_SYNCED: _ClassVar[EventKind]
    EVENT_KIND_LAGGED: _ClassVar[EventKind]

class RestoreKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTORE_KIND_UNSPECIFIED: _ClassVar[RestoreKind]
    RESTORE_KIND_SNAPSHOT: _ClassVar[RestoreKind]
    RESTORE_KIND_EXPORT: _ClassVar[RestoreKind]

class RestoreResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTORE_RESULT_UNSPECIFIED: _ClassVar[RestoreResult]
    RESTORE_RESULT_RESTORED: _ClassVar[RestoreResult]
    RESTORE_RESULT_UNCHANGED: _ClassVar[RestoreResult]
    RESTORE_RESULT_SKIPPED: _ClassVar[RestoreResult]
    RESTORE_RESULT_REPLACED: _ClassVar[RestoreResult]
    RESTORE_RESULT_FAILED: _ClassVar[RestoreResult]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_STORED: EventKind
EVENT_KIND_UPDATED: EventKind
EVENT_KIND_DELETED: EventKind
EVENT_KIND_EXPIRED: EventKind
EVENT_KIND_SNAPSHOT: EventKind
EVENT_KIND_SYNCED: EventKind
EVENT_KIND_LAGGED: EventKind
RESTORE_KIND_UNSPECIFIED: RestoreKind
RESTORE_KIND_SNAPSHOT: RestoreKind
RESTORE_KIND_EXPORT: RestoreKind
RESTORE_RESULT_UNSPECIFIED: RestoreResult
RESTORE_RESULT_RESTORED: RestoreResult
RESTORE_RESULT_UNCHANGED: RestoreResult
RESTORE_RESULT_SKIPPED: RestoreResult
RESTORE_RESULT_REPLACED: RestoreResult
RESTORE_RESULT_FAILED: RestoreResult

class CredentialKey(_message.Message):
    __slots__ = ("provider", "server_id", "user_id", "token_type")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    server_id: str
    user_id: str
    token_type: str
    def __init__(self, provider: _Optional[str] = ..., server_id: _Optional[str] = ..., user_id: _Optional[str] = ..., token_type: _Optional[str] = ...) -> None: ...

class CredentialMetadata(_message.Message):
    __slots__ = ("key", "revision", "created_at", "updated_at", "expires_at", "label", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    revision: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    label: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ..., revision: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., label: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("key", "secret", "label", "expires_at", "expected_revision", "attributes", "clear_attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CLEAR_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    secret: bytes
    label: str
    expires_at: _timestamp_pb2.Timestamp
    expected_revision: int
    attributes: _containers.ScalarMap[str, str]
    clear_attributes: bool
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ..., secret: _Optional[bytes] = ..., label: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_revision: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., clear_attributes: _Optional[bool] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("metadata", "created")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    metadata: CredentialMetadata
    created: bool
    def __init__(self, metadata: _Optional[_Union[CredentialMetadata, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("metadata", "secret")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    metadata: CredentialMetadata
    secret: bytes
    def __init__(self, metadata: _Optional[_Union[CredentialMetadata, _Mapping]] = ..., secret: _Optional[bytes] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "expected_revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    expected_revision: int
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("metadata",)
    METADATA_FIELD_NUMBER: _ClassVar[int]
    metadata: CredentialMetadata
    def __init__(self, metadata: _Optional[_Union[CredentialMetadata, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("provider", "server_id", "user_id", "page_size", "page_token", "match_empty_server_id", "match_empty_user_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    server_id: str
    user_id: str
    page_size: int
    page_token: str
    match_empty_server_id: bool
    match_empty_user_id: bool
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, provider: _Optional[str] = ..., server_id: _Optional[str] = ..., user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., match_empty_server_id: _Optional[bool] = ..., match_empty_user_id: _Optional[bool] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("credentials", "next_page_token")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[CredentialMetadata]
    next_page_token: str
    def __init__(self, credentials: _Optional[_Iterable[_Union[CredentialMetadata, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CallerIdentity(_message.Message):
    __slots__ = ("uid", "pid", "executable", "app_id")
    UID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    uid: int
    pid: int
    executable: str
    app_id: str
    def __init__(self, uid: _Optional[int] = ..., pid: _Optional[int] = ..., executable: _Optional[str] = ..., app_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("provider", "server_id", "user_id", "match_empty_server_id", "match_empty_user_id", "snapshot", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_USER_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    server_id: str
    user_id: str
    match_empty_server_id: bool
    match_empty_user_id: bool
    snapshot: bool
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, provider: _Optional[str] = ..., server_id: _Optional[str] = ..., user_id: _Optional[str] = ..., match_empty_server_id: _Optional[bool] = ..., match_empty_user_id: _Optional[bool] = ..., snapshot: _Optional[bool] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("kind", "metadata", "time", "actor", "missed")
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    kind: EventKind
    metadata: CredentialMetadata
    time: _timestamp_pb2.Timestamp
    actor: CallerIdentity
    missed: int
    def __init__(self, kind: _Optional[_Union[EventKind, str]] = ..., metadata: _Optional[_Union[CredentialMetadata, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[_Union[CallerIdentity, _Mapping]] = ..., missed: _Optional[int] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ("provider", "server_id", "user_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    provider: str
    server_id: str
    user_id: str
    def __init__(self, provider: _Optional[str] = ..., server_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LogoutResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedCompositeFieldContainer[CredentialMetadata]
    def __init__(self, deleted: _Optional[_Iterable[_Union[CredentialMetadata, _Mapping]]] = ...) -> None: ...

class AuditQuery(_message.Message):
    __slots__ = ("key", "program", "since", "until", "page_size", "page_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    program: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ..., program: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "time", "caller", "operation", "key", "outcome", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    caller: CallerIdentity
    operation: str
    key: CredentialKey
    outcome: str
    detail: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caller: _Optional[_Union[CallerIdentity, _Mapping]] = ..., operation: _Optional[str] = ..., key: _Optional[_Union[CredentialKey, _Mapping]] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AuditPage(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupManifest(_message.Message):
    __slots__ = ("format_version", "store_id", "key_id", "credential_count", "highest_revision", "taken_at", "size", "sha256")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_REVISION_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    store_id: str
    key_id: str
    credential_count: int
    highest_revision: int
    taken_at: _timestamp_pb2.Timestamp
    size: int
    sha256: str
    def __init__(self, format_version: _Optional[int] = ..., store_id: _Optional[str] = ..., key_id: _Optional[str] = ..., credential_count: _Optional[int] = ..., highest_revision: _Optional[int] = ..., taken_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("manifest", "data")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    manifest: BackupManifest
    data: bytes
    def __init__(self, manifest: _Optional[_Union[BackupManifest, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("provider", "server_id", "user_id", "match_empty_server_id", "match_empty_user_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_EMPTY_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    server_id: str
    user_id: str
    match_empty_server_id: bool
    match_empty_user_id: bool
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, provider: _Optional[str] = ..., server_id: _Optional[str] = ..., user_id: _Optional[str] = ..., match_empty_server_id: _Optional[bool] = ..., match_empty_user_id: _Optional[bool] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExportedCredential(_message.Message):
    __slots__ = ("metadata", "secret")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    metadata: CredentialMetadata
    secret: bytes
    def __init__(self, metadata: _Optional[_Union[CredentialMetadata, _Mapping]] = ..., secret: _Optional[bytes] = ...) -> None: ...

class RestoreOptions(_message.Message):
    __slots__ = ("kind", "manifest", "dry_run", "overwrite", "size")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    kind: RestoreKind
    manifest: BackupManifest
    dry_run: bool
    overwrite: bool
    size: int
    def __init__(self, kind: _Optional[_Union[RestoreKind, str]] = ..., manifest: _Optional[_Union[BackupManifest, _Mapping]] = ..., dry_run: _Optional[bool] = ..., overwrite: _Optional[bool] = ..., size: _Optional[int] = ...) -> None: ...

class RestoreChunk(_message.Message):
    __slots__ = ("options", "data")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    options: RestoreOptions
    data: bytes
    def __init__(self, options: _Optional[_Union[RestoreOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RestoreOutcome(_message.Message):
    __slots__ = ("key", "result", "file_revision", "stored_revision", "new_revision", "detail")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FILE_REVISION_FIELD_NUMBER: _ClassVar[int]
    STORED_REVISION_FIELD_NUMBER: _ClassVar[int]
    NEW_REVISION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    key: CredentialKey
    result: RestoreResult
    file_revision: int
    stored_revision: int
    new_revision: int
    detail: str
    def __init__(self, key: _Optional[_Union[CredentialKey, _Mapping]] = ..., result: _Optional[_Union[RestoreResult, str]] = ..., file_revision: _Optional[int] = ..., stored_revision: _Optional[int] = ..., new_revision: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "protocol", "pid", "store_path", "key_tier", "key_source", "credential_count", "uptime_seconds", "key_problem", "key_tiers", "key_id", "policy", "last_backup_at", "last_backup")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STORE_PATH_FIELD_NUMBER: _ClassVar[int]
    KEY_TIER_FIELD_NUMBER: _ClassVar[int]
    KEY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEY_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    KEY_TIERS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    version: str
    protocol: int
    pid: int
    store_path: str
    key_tier: str
    key_source: str
    credential_count: int
    uptime_seconds: int
    key_problem: str
    key_tiers: _containers.RepeatedCompositeFieldContainer[KeyTierState]
    key_id: str
    policy: str
    last_backup_at: _timestamp_pb2.Timestamp
    last_backup: str
    def __init__(self, version: _Optional[str] = ..., protocol: _Optional[int] = ..., pid: _Optional[int] = ..., store_path: _Optional[str] = ..., key_tier: _Optional[str] = ..., key_source: _Optional[str] = ..., credential_count: _Optional[int] = ..., uptime_seconds: _Optional[int] = ..., key_problem: _Optional[str] = ..., key_tiers: _Optional[_Iterable[_Union[KeyTierState, _Mapping]]] = ..., key_id: _Optional[str] = ..., policy: _Optional[str] = ..., last_backup_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_backup: _Optional[str] = ...) -> None: ...

class KeyTierState(_message.Message):
    __slots__ = ("tier", "state", "detail")
    TIER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    tier: str
    state: str
    detail: str
    def __init__(self, tier: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("old_key_id", "new_key_id", "resealed", "tier")
    OLD_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RESEALED_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    old_key_id: str
    new_key_id: str
    resealed: int
    tier: str
    def __init__(self, old_key_id: _Optional[str] = ..., new_key_id: _Optional[str] = ..., resealed: _Optional[int] = ..., tier: _Optional[str] = ...) -> None: ...

class MoveKeyRequest(_message.Message):
    __slots__ = ("to",)
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ...) -> None: ...

class MoveKeyResponse(_message.Message):
    __slots__ = ("to", "key_id")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    to: str
    key_id: str
    def __init__(self, to: _Optional[str] = ..., key_id: _Optional[str] = ..., **kwargs) -> None: ...
