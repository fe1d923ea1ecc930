//! Schema of user-service, as SeaORM migrations that run on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateUsers)]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    Email,
    PasswordHash,
    Bio,
    Image,
    Role,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveMigrationName)]
struct CreateUsers;

#[async_trait::async_trait]
impl MigrationTrait for CreateUsers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Users::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Users::Username).string_len(32).not_null())
                    .col(ColumnDef::new(Users::Email).string_len(254).not_null())
                    .col(ColumnDef::new(Users::PasswordHash).string().not_null())
                    .col(ColumnDef::new(Users::Bio).text().not_null().default(""))
                    .col(ColumnDef::new(Users::Image).text().not_null().default(""))
                    .col(ColumnDef::new(Users::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Users::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Users::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Named unique indexes: the store maps a violation to the field by these names.
        for (name, column) in [
            ("users_username_key", Users::Username),
            ("users_email_key", Users::Email),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(column)
                        .unique()
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}
