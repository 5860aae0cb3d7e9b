//! Tenancy commands: identity client credentials and access tokens.

use std::sync::Arc;

use anyhow::Context;
use postern_api::TokenAuthority;
use postern_config::Config;
use postern_model::QualifiedName;
use postern_state::{unguarded, Store};

use crate::cli::{ClientCommand, TokenCommand};
use crate::resources::print_table;

pub fn client(store: &Store, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Create {
            identity,
            namespace,
        } => {
            let created = store
                .create_identity_client(&QualifiedName::new(namespace, identity), unguarded)?;
            eprintln!(
                "client created for Identity {}; exchange it at POST /api/v1/token (grant_type=client_credentials). The secret is shown only this once:",
                created.identity
            );
            println!("client_id={}", created.client_id);
            println!("client_secret={}", created.secret.expose());
        }
        ClientCommand::List {
            identity,
            namespace,
        } => {
            let clients = store.list_identity_clients(&QualifiedName::new(namespace, identity))?;
            let mut rows = vec![vec!["CLIENT ID".to_owned(), "CREATED".to_owned()]];
            rows.extend(
                clients
                    .iter()
                    .map(|c| vec![c.client_id.clone(), c.created_at.to_string()]),
            );
            print_table(&rows);
        }
        ClientCommand::Delete {
            identity,
            client_id,
            namespace,
        } => {
            let who = QualifiedName::new(namespace, identity);
            store.delete_identity_client(&who, &client_id, unguarded)?;
            println!("client {client_id} of Identity {who} deleted");
        }
    }
    Ok(())
}

pub fn token(store: Store, config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let authority = TokenAuthority::new(store.clone(), postern_app::token_settings(config))?;
    match command {
        TokenCommand::Issue {
            identity,
            namespace,
            ttl,
        } => {
            let ttl = ttl
                .map(|t| postern_model::parse_duration(&t).map_err(anyhow::Error::msg))
                .transpose()
                .context("--ttl")?;
            let issued = authority.issue(&QualifiedName::new(namespace, identity), ttl)?;
            eprintln!(
                "token {} for {} expires in {}s; it is shown only this once:",
                issued.claims.jti,
                issued.claims.identity(),
                issued.claims.exp - issued.claims.iat
            );
            println!("{}", issued.token.expose());
        }
        TokenCommand::Revoke { jti } => {
            store.revoke_access_token(&jti)?;
            println!("token {jti} revoked");
        }
        TokenCommand::RotateKey => {
            let kid = authority.rotate()?;
            println!(
                "signing key {kid} is now current; older keys verify until their tokens expire"
            );
        }
    }
    Ok(())
}
