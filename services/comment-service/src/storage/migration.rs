//! Schema of comment-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateComments),
            Box::new(oba_kit::outbox::CreateOutbox),
            Box::new(oba_kit::outbox::DropPendingIndex),
        ]
    }
}

#[derive(DeriveIden)]
enum Comments {
    Table,
    Id,
    PostId,
    AuthorId,
    Body,
    CreatedAt,
    UpdatedAt,
}

struct CreateComments;

// Named explicitly: the derive would name every migration after this file.
impl MigrationName for CreateComments {
    fn name(&self) -> &str {
        "m20261129_000001_create_comments"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateComments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Comments::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Comments::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Comments::PostId).uuid().not_null())
                    .col(ColumnDef::new(Comments::AuthorId).uuid().not_null())
                    .col(ColumnDef::new(Comments::Body).text().not_null())
                    .col(
                        ColumnDef::new(Comments::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Comments::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Every read is "the comments of a post", in id order.
        manager
            .create_index(
                Index::create()
                    .name("comments_post_id_id_idx")
                    .table(Comments::Table)
                    .col(Comments::PostId)
                    .col(Comments::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Comments::Table).to_owned())
            .await
    }
}
