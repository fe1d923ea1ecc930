//! Schema of like-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateLikes),
            Box::new(oba_kit::outbox::CreateOutbox),
            Box::new(oba_kit::outbox::DropPendingIndex),
        ]
    }
}

#[derive(DeriveIden)]
enum Likes {
    Table,
    PostId,
    UserId,
    CreatedAt,
}

struct CreateLikes;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateLikes {
    fn name(&self) -> &str {
        "m20261129_000001_create_likes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLikes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Likes::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Likes::PostId).uuid().not_null())
                    .col(ColumnDef::new(Likes::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(Likes::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    // The pair is the key: liking twice, even concurrently, is one row.
                    .primary_key(Index::create().col(Likes::PostId).col(Likes::UserId))
                    .to_owned(),
            )
            .await?;
        // "Posts liked by a user" reads by user.
        manager
            .create_index(
                Index::create()
                    .name("likes_user_id_idx")
                    .table(Likes::Table)
                    .col(Likes::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Likes::Table).to_owned())
            .await
    }
}
