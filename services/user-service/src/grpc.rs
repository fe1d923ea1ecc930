//! The gRPC face of user-service: requests in, domain rules, store, responses out.

use std::sync::OnceLock;

use oba_kit::ServiceError;
use oba_kit::auth::{Role, TokenSigner};
use oba_proto::time::timestamp;
use oba_proto::user::v1 as pb;
use pb::user_service_server::UserService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{Email, Password, Username, password_matches};
use crate::storage::{Account, NewAccount, UserStore, role_of};

pub struct UserGrpc {
    store: UserStore,
    signer: TokenSigner,
}

impl UserGrpc {
    pub fn new(store: UserStore, signer: TokenSigner) -> Self {
        Self { store, signer }
    }

    fn session(&self, account: Account) -> Result<pb::Session, ServiceError> {
        let token = self
            .signer
            .sign(account.id, &account.username, role_of(&account))
            .map_err(|e| ServiceError::Internal(format!("signing token: {e}")))?;
        Ok(pb::Session {
            token,
            user: Some(user_message(&account)),
        })
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = request.into_inner();
        let username = Username::parse(&req.username)?;
        let email = Email::parse(&req.email)?;
        let password = Password::parse(&req.password)?;
        let password_hash = off_runtime(move || password.hash()).await?;
        let account = self
            .store
            .insert(NewAccount {
                username,
                email,
                password_hash,
                role: Role::User,
            })
            .await?;
        tracing::info!(user_id = %account.id, "account registered");
        Ok(Response::new(self.session(account)?))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = request.into_inner();
        let account = self.store.by_email(&req.email).await?;
        // An unknown email costs a hash check too, so timing does not reveal which emails exist.
        let stored = account
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |a| a.password_hash.clone());
        let password = req.password;
        let matches = off_runtime(move || Ok(password_matches(&password, &stored))).await?;
        match account {
            Some(account) if matches => Ok(Response::new(self.session(account)?)),
            _ => Err(ServiceError::Unauthenticated("email or password is invalid".into()).into()),
        }
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        let account = self
            .store
            .by_id(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        Ok(Response::new(user_message(&account)))
    }

    async fn get_profiles(
        &self,
        request: Request<pb::GetProfilesRequest>,
    ) -> Result<Response<pb::GetProfilesResponse>, Status> {
        let ids = request
            .into_inner()
            .ids
            .iter()
            .map(|id| parse_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let profiles = self
            .store
            .by_ids(ids)
            .await?
            .iter()
            .map(profile_message)
            .collect();
        Ok(Response::new(pb::GetProfilesResponse { profiles }))
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(raw).map_err(|_| ServiceError::invalid("id", "is not a valid id"))
}

/// Runs CPU-heavy work (argon2) on the blocking pool so it never stalls the async runtime.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        Password::parse("not-a-real-password")
            .and_then(|p| p.hash())
            .unwrap_or_default()
    })
}

fn user_message(a: &Account) -> pb::User {
    pb::User {
        id: a.id.to_string(),
        username: a.username.clone(),
        email: a.email.clone(),
        bio: a.bio.clone(),
        image: a.image.clone(),
        role: match role_of(a) {
            Role::User => pb::Role::User,
            Role::Admin => pb::Role::Admin,
        }
        .into(),
        created_at: Some(timestamp(a.created_at)),
    }
}

fn profile_message(a: &Account) -> pb::Profile {
    pb::Profile {
        id: a.id.to_string(),
        username: a.username.clone(),
        bio: a.bio.clone(),
        image: a.image.clone(),
    }
}
