//! The store's API spoken to a real etcd: requests go out through the etcd-client crate and
//! etcd's answers come back as the store's API types, so the conformance test compares like with
//! like and real-mode runs record histories in the same format as simulated ones.
//!
//! A [`Namespace`] lets many short sequences share one etcd process: keys gain a prefix,
//! revisions an offset and lease ids a base on the way out, and lose them on the way back.
//! [`Namespace::identity`] changes nothing (real-mode runs). Nothing here retries or decides what
//! an error means; that is the caller's business.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client as ec;
use faultline_store::api;

/// A failed call: the gRPC status code and message etcd sent, or what went wrong before etcd
/// answered (`code` "Transport", "Timeout" or "Client").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: String,
    pub message: String,
}

impl RpcError {
    fn client(message: impl Into<String>) -> Self {
        RpcError {
            code: "Client".into(),
            message: message.into(),
        }
    }

    fn timeout(what: &str) -> Self {
        RpcError {
            code: "Timeout".into(),
            message: format!("{what} timed out"),
        }
    }

    /// True when the request cannot have reached etcd: no connection could be made.
    pub fn never_sent(&self) -> bool {
        self.code == "Transport"
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<ec::Error> for RpcError {
    fn from(error: ec::Error) -> Self {
        match error {
            ec::Error::GRpcStatus(status) => {
                // tonic reports a refused connection as Unavailable with a transport error for
                // its message; nothing was sent then.
                let message = status.message().to_string();
                let code = if message.contains("tcp connect error")
                    || message.contains("Connection refused")
                {
                    "Transport".to_string()
                } else {
                    format!("{:?}", status.code())
                };
                RpcError { code, message }
            }
            ec::Error::TransportError(e) => RpcError {
                code: "Transport".into(),
                message: e.to_string(),
            },
            other => RpcError::client(other.to_string()),
        }
    }
}

/// How keys, revisions and lease ids of one caller map onto a shared etcd.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    prefix: Vec<u8>,
    revision_offset: i64,
    lease_offset: i64,
    leases_to_etcd: BTreeMap<i64, i64>,
    leases_from_etcd: BTreeMap<i64, i64>,
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Namespace {
    /// Keys, revisions and lease ids pass unchanged.
    pub fn identity() -> Self {
        Namespace::default()
    }

    /// Keys under `prefix`; store revision r is etcd revision r + `revision_offset`; a lease id
    /// the caller chose, l, is etcd's l + `lease_offset` (ids etcd chose are learnt with
    /// [`Namespace::learn_lease`]).
    pub fn new(prefix: &[u8], revision_offset: i64, lease_offset: i64) -> Self {
        Namespace {
            prefix: prefix.to_vec(),
            revision_offset,
            lease_offset,
            ..Namespace::default()
        }
    }

    /// Pairs a lease id the store chose with the one etcd chose for the same grant.
    pub fn learn_lease(&mut self, store: i64, etcd: i64) {
        self.leases_to_etcd.insert(store, etcd);
        self.leases_from_etcd.insert(etcd, store);
    }

    /// A key: the empty key stays empty, so that etcd refuses it as the store does.
    pub fn key_to(&self, key: &[u8]) -> Vec<u8> {
        if key.is_empty() {
            return Vec::new();
        }
        [self.prefix.as_slice(), key].concat()
    }

    /// A range end: empty stays empty (one key); "\0" (every key from `key` on) stops at the
    /// end of the prefix, so it never reaches another caller's keys.
    pub fn range_end_to(&self, end: &[u8]) -> Vec<u8> {
        if end.is_empty() || self.prefix.is_empty() {
            end.to_vec()
        } else if end == [0] {
            prefix_end(&self.prefix)
        } else {
            self.key_to(end)
        }
    }

    pub fn key_from(&self, key: &[u8]) -> Vec<u8> {
        match key.strip_prefix(self.prefix.as_slice()) {
            Some(rest) => rest.to_vec(),
            // Outside the namespace: kept whole so that a comparison shows it.
            None => key.to_vec(),
        }
    }

    /// Revisions above zero move; 0 ("latest", "no such key") and negatives do not.
    pub fn revision_to(&self, revision: i64) -> i64 {
        if revision > 0 {
            revision.saturating_add(self.revision_offset)
        } else {
            revision
        }
    }

    pub fn revision_from(&self, revision: i64) -> i64 {
        if revision > 0 {
            revision - self.revision_offset
        } else {
            revision
        }
    }

    pub fn lease_to(&self, id: i64) -> i64 {
        if id == 0 {
            return 0;
        }
        match self.leases_to_etcd.get(&id) {
            Some(etcd) => *etcd,
            None => id.saturating_add(self.lease_offset),
        }
    }

    pub fn lease_from(&self, id: i64) -> i64 {
        if id == 0 {
            return 0;
        }
        match self.leases_from_etcd.get(&id) {
            Some(store) => *store,
            None => id - self.lease_offset,
        }
    }

    fn header_from(&self, header: Option<&ec::ResponseHeader>) -> api::ResponseHeader {
        api::ResponseHeader {
            revision: header.map_or(0, |h| self.revision_from(h.revision())),
            ..api::ResponseHeader::default()
        }
    }

    pub fn kv_from(&self, kv: &ec::KeyValue) -> api::KeyValue {
        api::KeyValue {
            key: self.key_from(kv.key()),
            create_revision: self.revision_from(kv.create_revision()),
            mod_revision: self.revision_from(kv.mod_revision()),
            version: kv.version(),
            value: kv.value().to_vec(),
            lease: self.lease_from(kv.lease()),
        }
    }

    fn get_options(&self, r: &api::RangeRequest) -> ec::GetOptions {
        let mut options = ec::GetOptions::new()
            .with_limit(r.limit)
            .with_revision(self.revision_to(r.revision))
            .with_min_mod_revision(self.revision_to(r.min_mod_revision))
            .with_max_mod_revision(self.revision_to(r.max_mod_revision))
            .with_min_create_revision(self.revision_to(r.min_create_revision))
            .with_max_create_revision(self.revision_to(r.max_create_revision));
        if !r.range_end.is_empty() {
            options = options.with_range(self.range_end_to(&r.range_end));
        }
        if r.sort_order != api::SortOrder::None || r.sort_target != api::SortTarget::Key {
            let target = match r.sort_target {
                api::SortTarget::Key => ec::SortTarget::Key,
                api::SortTarget::Version => ec::SortTarget::Version,
                api::SortTarget::Create => ec::SortTarget::Create,
                api::SortTarget::Mod => ec::SortTarget::Mod,
                api::SortTarget::Value => ec::SortTarget::Value,
            };
            let order = match r.sort_order {
                api::SortOrder::None => ec::SortOrder::None,
                api::SortOrder::Ascend => ec::SortOrder::Ascend,
                api::SortOrder::Descend => ec::SortOrder::Descend,
            };
            options = options.with_sort(target, order);
        }
        if r.serializable {
            options = options.with_serializable();
        }
        if r.keys_only {
            options = options.with_keys_only();
        }
        if r.count_only {
            options = options.with_count_only();
        }
        options
    }

    fn put_options(&self, p: &api::PutRequest) -> ec::PutOptions {
        let mut options = ec::PutOptions::new().with_lease(self.lease_to(p.lease));
        if p.prev_kv {
            options = options.with_prev_key();
        }
        if p.ignore_value {
            options = options.with_ignore_value();
        }
        if p.ignore_lease {
            options = options.with_ignore_lease();
        }
        options
    }

    fn delete_options(&self, d: &api::DeleteRangeRequest) -> ec::DeleteOptions {
        let mut options = ec::DeleteOptions::new();
        if !d.range_end.is_empty() {
            options = options.with_range(self.range_end_to(&d.range_end));
        }
        if d.prev_kv {
            options = options.with_prev_key();
        }
        options
    }

    fn compare_to(&self, c: &api::Compare) -> ec::Compare {
        let key = self.key_to(&c.key);
        let op = match c.result {
            api::CompareResult::Equal => ec::CompareOp::Equal,
            api::CompareResult::Greater => ec::CompareOp::Greater,
            api::CompareResult::Less => ec::CompareOp::Less,
            api::CompareResult::NotEqual => ec::CompareOp::NotEqual,
        };
        let compare = match &c.target {
            api::CompareTarget::Version(v) => ec::Compare::version(key, op, *v),
            api::CompareTarget::Create(r) => {
                ec::Compare::create_revision(key, op, self.revision_to(*r))
            }
            api::CompareTarget::Mod(r) => ec::Compare::mod_revision(key, op, self.revision_to(*r)),
            api::CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
            api::CompareTarget::Lease(l) => ec::Compare::lease(key, op, self.lease_to(*l)),
        };
        if c.range_end.is_empty() {
            compare
        } else {
            compare.with_range(self.range_end_to(&c.range_end))
        }
    }

    fn op_to(&self, op: &api::RequestOp) -> ec::TxnOp {
        match op {
            api::RequestOp::Range(r) => {
                ec::TxnOp::get(self.key_to(&r.key), Some(self.get_options(r)))
            }
            api::RequestOp::Put(p) => ec::TxnOp::put(
                self.key_to(&p.key),
                p.value.clone(),
                Some(self.put_options(p)),
            ),
            api::RequestOp::DeleteRange(d) => {
                ec::TxnOp::delete(self.key_to(&d.key), Some(self.delete_options(d)))
            }
            api::RequestOp::Txn(t) => ec::TxnOp::txn(self.txn_to(t)),
        }
    }

    fn txn_to(&self, t: &api::TxnRequest) -> ec::Txn {
        ec::Txn::new()
            .when(
                t.compare
                    .iter()
                    .map(|c| self.compare_to(c))
                    .collect::<Vec<_>>(),
            )
            .and_then(t.success.iter().map(|o| self.op_to(o)).collect::<Vec<_>>())
            .or_else(t.failure.iter().map(|o| self.op_to(o)).collect::<Vec<_>>())
    }

    fn range_from(&self, r: &ec::GetResponse) -> api::RangeResponse {
        api::RangeResponse {
            header: self.header_from(r.header()),
            kvs: r.kvs().iter().map(|kv| self.kv_from(kv)).collect(),
            more: r.more(),
            count: r.count(),
        }
    }

    fn put_from(&self, r: &ec::PutResponse) -> api::PutResponse {
        api::PutResponse {
            header: self.header_from(r.header()),
            prev_kv: r.prev_key().map(|kv| self.kv_from(kv)),
        }
    }

    fn delete_from(&self, r: &ec::DeleteResponse) -> api::DeleteRangeResponse {
        api::DeleteRangeResponse {
            header: self.header_from(r.header()),
            deleted: r.deleted(),
            prev_kvs: r.prev_kvs().iter().map(|kv| self.kv_from(kv)).collect(),
        }
    }

    fn txn_from(&self, r: &ec::TxnResponse) -> api::TxnResponse {
        api::TxnResponse {
            header: self.header_from(r.header()),
            succeeded: r.succeeded(),
            responses: r
                .op_responses()
                .iter()
                .map(|op| match op {
                    ec::TxnOpResponse::Get(g) => api::ResponseOp::Range(self.range_from(g)),
                    ec::TxnOpResponse::Put(p) => api::ResponseOp::Put(self.put_from(p)),
                    ec::TxnOpResponse::Delete(d) => {
                        api::ResponseOp::DeleteRange(self.delete_from(d))
                    }
                    ec::TxnOpResponse::Txn(t) => api::ResponseOp::Txn(self.txn_from(t)),
                })
                .collect(),
        }
    }

    fn event_from(&self, e: &ec::Event) -> api::Event {
        api::Event {
            kind: match e.event_type() {
                ec::EventType::Put => api::EventType::Put,
                ec::EventType::Delete => api::EventType::Delete,
            },
            kv: e.kv().map(|kv| self.kv_from(kv)).unwrap_or_default(),
            prev_kv: e.prev_kv().map(|kv| self.kv_from(kv)),
        }
    }

    fn watch_response_from(&self, r: &ec::WatchResponse) -> api::WatchResponse {
        api::WatchResponse {
            header: self.header_from(r.header()),
            watch_id: r.watch_id(),
            created: r.created(),
            canceled: r.canceled(),
            compact_revision: self.revision_from(r.compact_revision()),
            cancel_reason: r.cancel_reason().to_string(),
            events: r.events().iter().map(|e| self.event_from(e)).collect(),
        }
    }
}

/// Sends one request to etcd and returns its answer in the store's terms.
pub async fn execute(
    client: &mut ec::Client,
    ns: &Namespace,
    request: &api::Request,
) -> Result<api::Response, RpcError> {
    Ok(match request {
        api::Request::Range(r) => {
            let resp = client
                .get(ns.key_to(&r.key), Some(ns.get_options(r)))
                .await?;
            api::Response::Range(ns.range_from(&resp))
        }
        api::Request::Put(p) => {
            let resp = client
                .put(ns.key_to(&p.key), p.value.clone(), Some(ns.put_options(p)))
                .await?;
            api::Response::Put(ns.put_from(&resp))
        }
        api::Request::DeleteRange(d) => {
            let resp = client
                .delete(ns.key_to(&d.key), Some(ns.delete_options(d)))
                .await?;
            api::Response::DeleteRange(ns.delete_from(&resp))
        }
        api::Request::Txn(t) => {
            let resp = client.txn(ns.txn_to(t)).await?;
            api::Response::Txn(ns.txn_from(&resp))
        }
        api::Request::Compact(c) => {
            let options = c
                .physical
                .then(|| ec::CompactionOptions::new().with_physical());
            let resp = client.compact(ns.revision_to(c.revision), options).await?;
            api::Response::Compact(api::CompactionResponse {
                header: ns.header_from(resp.header()),
            })
        }
        api::Request::LeaseGrant(g) => {
            let options =
                (g.id != 0).then(|| ec::LeaseGrantOptions::new().with_id(ns.lease_to(g.id)));
            let resp = client.lease_grant(g.ttl, options).await?;
            api::Response::LeaseGrant(api::LeaseGrantResponse {
                header: ns.header_from(resp.header()),
                id: ns.lease_from(resp.id()),
                ttl: resp.ttl(),
            })
        }
        api::Request::LeaseRevoke(r) => {
            let resp = client.lease_revoke(ns.lease_to(r.id)).await?;
            api::Response::LeaseRevoke(api::LeaseRevokeResponse {
                header: ns.header_from(resp.header()),
            })
        }
        api::Request::Alarm(_) => {
            return Err(RpcError::client(
                "alarm requests are not sent to a real etcd",
            ))
        }
    })
}

/// LeaseTimeToLive, in the store's terms.
pub async fn time_to_live(
    client: &mut ec::Client,
    ns: &Namespace,
    id: i64,
    keys: bool,
) -> Result<api::LeaseTimeToLiveResponse, RpcError> {
    let options = keys.then(|| ec::LeaseTimeToLiveOptions::new().with_keys());
    let resp = client.lease_time_to_live(ns.lease_to(id), options).await?;
    Ok(api::LeaseTimeToLiveResponse {
        header: ns.header_from(resp.header()),
        id: ns.lease_from(resp.id()),
        ttl: resp.ttl(),
        granted_ttl: resp.granted_ttl(),
        keys: resp.keys().iter().map(|k| ns.key_from(k)).collect(),
    })
}

/// What a watch replay should bring, as far as the caller knows: how many events, and whether a
/// cancel (a compacted start) ends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchExpectation {
    pub events: usize,
    pub canceled: bool,
}

/// Opens a watch and returns its responses until it has caught up with the present: the created
/// response, historical events, and a cancel if there is one.
///
/// etcd 3.4 answers a progress request at once, even for a watcher still catching up (etcd issue
/// 15220, fixed in 3.5), so a progress response cannot mark the end of a replay. Instead the
/// caller says what it expects: until the created response, that many events and the expected
/// cancel have arrived, the replay waits (up to `timeout`, so a slow etcd is never mistaken for
/// a missing event); then it ends once the stream stays quiet, for 20 ms after the expected
/// events, or for 250 ms (longer than etcd's 100 ms sync period) when none were expected.
pub async fn watch_replay(
    client: &mut ec::Client,
    ns: &Namespace,
    request: &api::WatchCreateRequest,
    expect: WatchExpectation,
    timeout: Duration,
) -> Result<Vec<api::WatchResponse>, RpcError> {
    let mut options =
        ec::WatchOptions::new().with_start_revision(ns.revision_to(request.start_revision));
    if !request.range_end.is_empty() {
        options = options.with_range(ns.range_end_to(&request.range_end));
    }
    if request.prev_kv {
        options = options.with_prev_key();
    }
    let mut filters = Vec::new();
    if request.no_put {
        filters.push(ec::WatchFilterType::NoPut);
    }
    if request.no_delete {
        filters.push(ec::WatchFilterType::NoDelete);
    }
    if !filters.is_empty() {
        options = options.with_filters(filters);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = tokio::time::timeout(
        timeout,
        client.watch(ns.key_to(&request.key), Some(options)),
    )
    .await
    .map_err(|_| RpcError::timeout("opening a watch"))??;
    let mut responses: Vec<api::WatchResponse> = Vec::new();
    let mut events = 0;
    loop {
        let created = responses.iter().any(|r| r.created);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if !created || events < expect.events || expect.canceled {
            left
        } else if expect.events > 0 {
            Duration::from_millis(20).min(left)
        } else {
            Duration::from_millis(250).min(left)
        };
        match tokio::time::timeout(wait, stream.message()).await {
            Err(_) => return Ok(responses),
            Ok(message) => {
                let Some(message) = message? else {
                    return Err(RpcError::client("the watch stream ended"));
                };
                let response = ns.watch_response_from(&message);
                let progress =
                    !response.created && !response.canceled && response.events.is_empty();
                if progress {
                    continue;
                }
                let canceled = response.canceled;
                events += response.events.len();
                responses.push(response);
                if canceled {
                    return Ok(responses);
                }
            }
        }
    }
}
