use aws_sdk_sagemaker::{
    error::ProvideErrorMetadata,
    types::{
        ContainerDefinition, InferenceSpecification, ModelApprovalStatus,
        ModelPackageContainerDefinition, ModelPackageType, SortBy, SortOrder,
    },
};

use crate::helpers::spawn_app;

fn spec(url: &str) -> InferenceSpecification {
    InferenceSpecification::builder()
        .containers(
            ModelPackageContainerDefinition::builder()
                .image("xgboost:1.7-1")
                .model_data_url(url)
                .build(),
        )
        .supported_content_types("text/csv")
        .supported_response_mime_types("text/csv")
        .build()
}

#[tokio::test]
async fn versioned_packages_approval_listing_and_idempotency() {
    let app = spawn_app().await;
    let group = app
        .sm
        .create_model_package_group()
        .model_package_group_name("Churn-Models")
        .send()
        .await
        .unwrap();
    assert_eq!(
        group.model_package_group_arn(),
        Some("arn:aws:sagemaker:us-east-1:000000000000:model-package-group/churn-models")
    );
    let dup = app
        .sm
        .create_model_package_group()
        .model_package_group_name("Churn-Models")
        .send()
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some("ValidationException"));

    let url = app.put_demo_model("v1");
    let mut arns = Vec::new();
    for i in 0..3 {
        let out = app
            .sm
            .create_model_package()
            .model_package_group_name("Churn-Models")
            .model_package_description(format!("candidate {i}"))
            .inference_specification(spec(&url))
            .client_token(format!("token-{i}"))
            .send()
            .await
            .unwrap();
        arns.push(out.model_package_arn().unwrap().to_owned());
    }
    assert_eq!(
        arns[2],
        "arn:aws:sagemaker:us-east-1:000000000000:model-package/churn-models/3"
    );
    // Same ClientToken, same package: no version 4.
    let again = app
        .sm
        .create_model_package()
        .model_package_group_name("Churn-Models")
        .inference_specification(spec(&url))
        .client_token("token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(again.model_package_arn(), Some(arns[1].as_str()));

    let v2 = app
        .sm
        .describe_model_package()
        .model_package_name("Churn-Models/2")
        .send()
        .await
        .unwrap();
    assert_eq!(v2.model_package_version(), Some(2));
    assert_eq!(v2.model_package_name(), Some("Churn-Models"));
    assert_eq!(
        v2.model_approval_status(),
        Some(&ModelApprovalStatus::PendingManualApproval)
    );
    assert_eq!(v2.model_package_status().unwrap().as_str(), "Completed");
    assert_eq!(
        v2.inference_specification().unwrap().containers()[0].model_data_url(),
        Some(url.as_str())
    );

    // A pending package cannot be deployed.
    let refused = app
        .sm
        .create_model()
        .model_name("pending-model")
        .primary_container(
            ContainerDefinition::builder()
                .model_package_name(&arns[1])
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("ValidationException"));
    assert!(
        refused.message().unwrap().contains("Approved"),
        "{refused:?}"
    );

    for arn in [&arns[0], &arns[2]] {
        app.sm
            .update_model_package()
            .model_package_arn(arn)
            .model_approval_status(ModelApprovalStatus::Approved)
            .approval_description("looks good")
            .send()
            .await
            .unwrap();
    }
    let approved = app
        .sm
        .list_model_packages()
        .model_package_group_name("Churn-Models")
        .model_approval_status(ModelApprovalStatus::Approved)
        .sort_by(aws_sdk_sagemaker::types::ModelPackageSortBy::CreationTime)
        .sort_order(SortOrder::Descending)
        .send()
        .await
        .unwrap();
    let versions: Vec<i32> = approved
        .model_package_summary_list()
        .iter()
        .map(|p| p.model_package_version().unwrap())
        .collect();
    assert_eq!(versions, [3, 1]);
    assert!(
        approved.next_token().is_none(),
        "last page carries no NextToken"
    );
    let v3 = app
        .sm
        .describe_model_package()
        .model_package_name(&arns[2])
        .send()
        .await
        .unwrap();
    assert!(v3.last_modified_time().is_some());
    assert_eq!(v3.approval_description(), Some("looks good"));

    // An approved package deploys.
    app.sm
        .create_model()
        .model_name("approved-model")
        .primary_container(
            ContainerDefinition::builder()
                .model_package_name(&arns[2])
                .build(),
        )
        .send()
        .await
        .unwrap();
    let _ = (SortBy::Name, ModelPackageType::Versioned);
}

#[tokio::test]
async fn pagination_walks_every_page_once() {
    let app = spawn_app().await;
    app.sm
        .create_model_package_group()
        .model_package_group_name("paged")
        .send()
        .await
        .unwrap();
    for _ in 0..7 {
        app.sm
            .create_model_package()
            .model_package_group_name("paged")
            .inference_specification(spec("s3://b/k"))
            .send()
            .await
            .unwrap();
    }
    let mut pages = app
        .sm
        .list_model_packages()
        .model_package_group_name("paged")
        .max_results(3)
        .into_paginator()
        .send();
    let mut seen = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        page_count += 1;
        seen.extend(
            page.unwrap()
                .model_package_summary_list()
                .iter()
                .map(|p| p.model_package_version().unwrap()),
        );
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(page_count, 3);

    let missing = app
        .sm
        .describe_model_package()
        .model_package_name("paged/99")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("ValidationException"));
    let bad = app
        .sm
        .create_model_package()
        .model_package_group_name("no-such-group")
        .inference_specification(spec("s3://b/k"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("ValidationException"));
}
