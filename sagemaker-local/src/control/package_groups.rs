//! Model package groups: the named, versioned collections that packages are registered in.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{name_from_arn, require_name};
use crate::{AppState, db::MODEL_PACKAGE_GROUPS, error::AwsError};

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct GroupRecord {
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    pub created: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGroupInput {
    model_package_group_name: String,
    model_package_group_description: Option<String>,
}

pub fn create_group(state: &AppState, input: CreateGroupInput) -> Result<Value, AwsError> {
    let name = input.model_package_group_name;
    require_name("modelPackageGroupName", &name, &['-'], 63)?;
    let arn = state.arn("model-package-group", &name);
    state.db.write(|txn| {
        if txn
            .get::<GroupRecord>(MODEL_PACKAGE_GROUPS, &name.to_lowercase())?
            .is_some()
        {
            return Err(AwsError::validation_exception(format!(
                "Model Package Group already exists: {arn}"
            )));
        }
        let record = GroupRecord {
            name: name.clone(),
            arn: arn.clone(),
            description: input.model_package_group_description,
            created: state.now(),
        };
        txn.put(MODEL_PACKAGE_GROUPS, &name.to_lowercase(), &record)?;
        Ok(json!({ "ModelPackageGroupArn": arn }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeGroupInput {
    model_package_group_name: String,
}

pub fn describe_group(state: &AppState, input: DescribeGroupInput) -> Result<Value, AwsError> {
    let name = name_from_arn(&input.model_package_group_name, "model-package-group").to_lowercase();
    let group: GroupRecord = state.db.get(MODEL_PACKAGE_GROUPS, &name)?.ok_or_else(|| {
        AwsError::validation_exception(format!(
            "ModelPackageGroup {} does not exist.",
            input.model_package_group_name
        ))
    })?;
    Ok(json!({
        "ModelPackageGroupName": group.name,
        "ModelPackageGroupArn": group.arn,
        "ModelPackageGroupDescription": group.description,
        "CreationTime": group.created,
        "ModelPackageGroupStatus": "Completed",
    }))
}
