//! Helpers shared by the store's integration tests: a tiny "node" that admits and applies
//! requests in log order, and request builders.

#![allow(dead_code)]

use faultline_store::*;

/// Drives a store as a node would: admit, then apply at the next log index.
pub struct Harness {
    pub store: Store,
    pub index: u64,
    pub now_ms: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(StoreConfig::default())
    }

    pub fn with_config(config: StoreConfig) -> Self {
        Harness {
            store: Store::new(config),
            index: 0,
            now_ms: 0,
        }
    }

    pub fn submit(&mut self, req: Request) -> Result<Response, EtcdError> {
        self.store.admit(&req)?;
        self.index += 1;
        let result = self
            .store
            .apply(self.index, &req, self.now_ms)
            .expect("a new index applies");
        self.store.check_invariants();
        result
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.submit(Request::Put(put(key, value))) {
            Ok(Response::Put(r)) => r,
            other => panic!("put {key}: {other:?}"),
        }
    }

    pub fn put_lease(&mut self, key: &str, value: &str, lease: LeaseId) -> PutResponse {
        let req = PutRequest {
            lease,
            ..put(key, value)
        };
        match self.submit(Request::Put(req)) {
            Ok(Response::Put(r)) => r,
            other => panic!("put {key}: {other:?}"),
        }
    }

    pub fn delete(&mut self, key: &str, range_end: &[u8]) -> DeleteRangeResponse {
        let req = DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: true,
        };
        match self.submit(Request::DeleteRange(req)) {
            Ok(Response::DeleteRange(r)) => r,
            other => panic!("delete {key}: {other:?}"),
        }
    }

    pub fn txn(&mut self, txn: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.submit(Request::Txn(txn)).map(|r| match r {
            Response::Txn(t) => t,
            other => panic!("txn answered {other:?}"),
        })
    }

    pub fn compact(&mut self, revision: i64) -> Result<Response, EtcdError> {
        self.submit(Request::Compact(CompactionRequest {
            revision,
            physical: true,
        }))
    }

    pub fn grant(&mut self, ttl: i64, id: LeaseId) -> LeaseGrantResponse {
        match self.submit(Request::LeaseGrant(LeaseGrantRequest { ttl, id })) {
            Ok(Response::LeaseGrant(r)) => r,
            other => panic!("grant: {other:?}"),
        }
    }

    pub fn revoke(&mut self, id: LeaseId) -> Result<Response, EtcdError> {
        self.submit(Request::LeaseRevoke(LeaseRevokeRequest { id }))
    }

    pub fn get(&self, key: &str) -> RangeResponse {
        self.store.range(&range(key, b"")).expect("read")
    }

    pub fn rev(&self) -> i64 {
        self.store.current_revision()
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn range(key: &str, range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

/// The range end that makes `prefix` a prefix read.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

pub fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
    }
}

pub fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// Bytes as text, with anything unprintable escaped (`\0` stays visible).
pub fn text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}
